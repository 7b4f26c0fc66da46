"""Labeled ReID shard sets for fine-tuning / evaluation tests, made with the real tools.

`shard-tools synth` renders synthetic pedestrians in Market-1501 layout; `shard-tools pack market1501`
turns them into the DESIGN.md shard format. Sets are cached per pytest session under the session's
base temp folder (keyed by their parameters), so test modules share them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shard_tools.cli import main as shard_tools_main
from shard_tools.writer import ShardWriter


def reid_shards(tmp_path_factory: pytest.TempPathFactory, identities: int = 40, cameras: int = 3, seed: int = 1,
                maxcount: int = 100) -> Path:
    """A packed labeled shard set (train/query/gallery) of synthetic pedestrians; created once per session.

    Args:
        tmp_path_factory: pytest's factory (the cache lives under its base temp folder).
        identities: labeled identities (half train, half test).
        cameras: cameras (2..9).
        seed: synthesis seed.
        maxcount: samples per shard (small, so splits span several shards).
    """
    root = tmp_path_factory.getbasetemp() / f"reid-{identities}-{cameras}-{seed}-{maxcount}"
    shards = root / "shards"
    if not (shards / "manifest.json").is_file():
        raw = root / "raw"
        assert shard_tools_main(["synth", str(raw), "--identities", str(identities), "--cameras", str(cameras),
                                 "--unlabeled", "0", "--seed", str(seed)]) in (0, None)
        assert shard_tools_main(["pack", "market1501", str(raw), str(shards), "--maxcount", str(maxcount)]) in (0, None)
    return shards


def jpeg_bytes(seed: int, size_wh: tuple[int, int] = (32, 64)) -> bytes:
    """A small random RGB JPEG."""
    arr = np.random.default_rng(seed).integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shard_set(root: Path, splits: dict[str, list[tuple[str, dict[str, bytes]]]]) -> Path:
    """A hand-made shard set: one tar per split, written with shard_tools' writer, plus a manifest.

    Args:
        root: output folder.
        splits: split -> [(key, {ext: bytes})], members written as given (so tests can break them).
    """
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "personvit-shards/1", "splits": {}}
    for split, samples in splits.items():
        name = f"{split}-000000.tar"
        w = ShardWriter(root / name)
        for key, members in samples:
            w.add(key, members)
        nbytes, sha = w.commit()
        manifest["splits"][split] = {"samples": len(samples), "shards": [
            {"name": name, "samples": len(samples), "bytes": nbytes, "sha256": sha}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def sample(key: str, pid: int, camid: int, seed: int) -> tuple[str, dict[str, bytes]]:
    """One well-formed sample (jpg + json)."""
    meta = {"camid": camid, "dataset": "test", "path": f"x/{key}.jpg", "pid": pid}
    return key, {"jpg": jpeg_bytes(seed), "json": json.dumps(meta).encode()}
