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


REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "finetune" / "tiny_cpu.yaml"
# Shrinks configs/finetune/tiny_cpu.yaml further: 32x16 inputs, patch 4, dim 64, depth 2 (~10 steps/s on
# one core). A ViT from scratch on SGD learns slowly; 30 epochs of this set move it well above chance.
SMALL = [
    "data.img_size=[32,16]", "data.pad=2", "model.patch_size=4", "model.embed_dim=64", "model.depth=2",
    "model.num_heads=2", "run.progress_every_s=1000",
]  # fmt: skip


def finetune_config(shards: Path, run_dir: Path, *overrides: str):
    """The tiny fine-tuning config on `shards` writing to `run_dir`."""
    from personvit.config.core import load_config
    from personvit.config.finetune import FinetuneConfig

    return load_config(FinetuneConfig, TINY_CONFIG, [f"data.shards={shards}", f"run.dir={run_dir}", *SMALL, *overrides])


def finetuned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(shard folder, run folder) of one tiny fine-tuning run, made once per session in-process."""
    import torch

    from personvit.engine.finetune import run

    shards = reid_shards(tmp_path_factory, identities=80, cameras=3, seed=2, maxcount=200)
    run_dir = tmp_path_factory.getbasetemp() / "reid-finetuned"
    if not (run_dir / "results.json").is_file():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run(finetune_config(shards, run_dir, "train.epochs=30", "data.erase_p=0.0"))
        finally:
            torch.set_num_threads(threads)
    return shards, run_dir
