"""A tiny shard set (real tars, real webdataset writer) and a tiny pretraining run folder."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
import yaml
from PIL import Image, ImageDraw

from personvit.checkpoint import CheckpointManager
from personvit.models import DINOHead, MultiCropWrapper, build_vit

TINY = {"arch": "vit_tiny", "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
IMG_SIZE = (64, 32)


def person_jpeg(pid: int, camid: int, rng: np.random.Generator) -> bytes:
    """A 64x32 'pedestrian': identity colours for shirt/pants, camera-coloured background."""
    colours = np.random.default_rng(pid).integers(0, 256, (2, 3))
    bg = tuple(int(c) for c in np.random.default_rng(100 + camid).integers(0, 256, 3))
    im = Image.new("RGB", (32, 64), bg)
    d = ImageDraw.Draw(im)
    dx = int(rng.integers(-2, 3))
    d.ellipse([11 + dx, 2, 21 + dx, 12], fill=(230, 190, 160))
    d.rectangle([8 + dx, 13, 24 + dx, 36], fill=tuple(int(c) for c in colours[0]))
    d.rectangle([9 + dx, 37, 23 + dx, 60], fill=tuple(int(c) for c in colours[1]))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_split(root: Path, split: str, items: list[tuple[str, int, int]], per_shard: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    shards = []
    for s in range(0, len(items), per_shard):
        name = f"{split}-{s // per_shard:06d}.tar"
        with wds.TarWriter(str(root / name)) as sink:
            for key, pid, camid in items[s:s + per_shard]:
                meta = {"pid": pid, "camid": camid, "dataset": "synthetic", "path": f"{split}/{key}.jpg"}
                sink.write({"__key__": key, "jpg": person_jpeg(pid, camid, rng), "json": json.dumps(meta).encode()})
        data = (root / name).read_bytes()
        shards.append({"name": name, "samples": len(items[s:s + per_shard]), "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()})
    return {"samples": len(items), "shards": shards}


@pytest.fixture(scope="session")
def shard_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    splits = {
        "train": [(f"{pid:04d}_c{cam}_{i}", pid, cam) for pid in range(1, 9) for i, cam in enumerate((1, 2, 3))],
        "query": [(f"{pid:04d}_c1_q", pid, 1) for pid in range(1, 7)],
        "gallery": [(f"{pid:04d}_c{cam}_g{i}", pid, cam) for pid in (0, *range(1, 7))
                    for i, cam in enumerate((1, 2, 3))],
    }
    manifest = {"format": "personvit-shards/1",
                "splits": {name: write_split(root, name, items, per_shard=10, seed=i)
                           for i, (name, items) in enumerate(splits.items())}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_vit(TINY["arch"], img_size=IMG_SIZE, attn_backend="math",
                     **{k: v for k, v in TINY.items() if k != "arch"}).eval()


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory) -> Path:
    """A run folder as pretraining leaves it: config.yaml + a checkpoint with teacher/student."""
    run = tmp_path_factory.mktemp("pretrain_run")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": dict(TINY), "data": {"img_size": list(IMG_SIZE)}}))
    state = {name: MultiCropWrapper(tiny_model(seed), tiny_head(seed)).state_dict()
             for name, seed in (("teacher", 0), ("student", 1))}
    CheckpointManager(run / "checkpoints").save(state, step=7, epoch=1)
    return run


def tiny_head(seed: int = 0) -> DINOHead:
    torch.manual_seed(100 + seed)
    return DINOHead(TINY["embed_dim"], out_dim=16, patch_out_dim=16, hidden_dim=24, bottleneck_dim=8)
