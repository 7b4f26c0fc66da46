"""PretrainLoader on real tar shards read back through the loader and through plain webdataset."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from personvit.config.data import PretrainDataConfig
from personvit.data.device_augment import apply_photometric, device_views
from personvit.data.pretrain_loader import CorruptDataError, PretrainLoader
from personvit.data.shards import ShardError

SHARD_SIZES = (37, 50, 13, 61, 39)  # uneven on purpose: 200 samples


def _jpeg(rng: np.random.Generator) -> bytes:
    h, w = int(rng.integers(90, 200)), int(rng.integers(40, 100))
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[y : y + h // 3, x : x + w // 3] = rng.integers(0, 256, 3)
    img += rng.integers(0, 30, img.shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_shards(root: Path, sizes=SHARD_SIZES, corrupt: frozenset[str] = frozenset(), seed: int = 0) -> Path:
    """Tar shards `train-NNNNNN.tar` (key.jpg + key.json) and a manifest in shard_tools' layout."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    entries, n = [], 0
    for s, size in enumerate(sizes):
        name = f"train-{s:06d}.tar"
        with tarfile.open(root / name, "w", format=tarfile.GNU_FORMAT) as tar:
            for _ in range(size):
                key = f"img{n:05d}"
                data = _jpeg(rng)
                if key in corrupt:
                    data = data[: len(data) // 3]  # truncated JPEG
                meta = json.dumps({"pid": -1, "camid": -1, "dataset": "synthetic", "path": f"{key}.jpg"}).encode()
                for ext, payload in (("jpg", data), ("json", meta)):
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size = len(payload)
                    tar.addfile(ti, io.BytesIO(payload))
                n += 1
        entries.append({"name": name, "samples": size, "bytes": (root / name).stat().st_size, "sha256": ""})
    manifest = {"format": "personvit-shards/1", "splits": {"train": {"samples": n, "shards": entries}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"))


def tiny_cfg(shards: Path, **kw) -> PretrainDataConfig:
    base = dict(
        shards=str(shards), batch_size_per_rank=8, num_workers=0, global_size=(64, 32), local_size=(32, 16),
        n_local=2, patch_size=8, shuffle_group_shards=2, max_corrupt=0,
    )
    base.update(kw)
    return PretrainDataConfig(**base)


def _assert_same(a, b) -> None:
    assert a.keys == b.keys and a.index == b.index and a.epoch == b.epoch
    for x, y in zip(a.global_crops + a.local_crops, b.global_crops + b.local_crops):
        assert torch.equal(x, y)
    assert torch.equal(a.masks, b.masks)
    for name in ("flip", "jitter", "jitter_order", "grayscale", "blur_sigma", "solarize"):
        assert torch.equal(getattr(a.photometric, name), getattr(b.photometric, name)), name


def test_same_stream_for_0_and_2_workers(shard_dir):
    serial = list(PretrainLoader(tiny_cfg(shard_dir), seed=3, rank=0, world_size=1).iter_epoch(1))
    parallel = list(PretrainLoader(tiny_cfg(shard_dir, num_workers=2), seed=3, rank=0, world_size=1).iter_epoch(1))
    assert len(serial) == len(parallel) == 200 // 8
    for a, b in zip(serial, parallel):
        _assert_same(a, b)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_continues_at_the_exact_batch(shard_dir, workers):
    full = list(PretrainLoader(tiny_cfg(shard_dir), seed=5, rank=1, world_size=2).iter_epoch(2))
    resumed_loader = PretrainLoader(tiny_cfg(shard_dir, num_workers=workers), seed=5, rank=1, world_size=2)
    resumed = list(resumed_loader.iter_epoch(2, start_batch=5))
    assert [b.index for b in resumed] == list(range(5, resumed_loader.batches_per_epoch))
    for a, b in zip(full[5:], resumed):
        _assert_same(a, b)
    assert list(resumed_loader.iter_epoch(2, start_batch=resumed_loader.batches_per_epoch)) == []


def test_epoch_is_a_seeded_permutation_split_across_ranks(shard_dir):
    world, bs = 3, 8
    keys_per_rank = []
    for rank in range(world):
        loader = PretrainLoader(tiny_cfg(shard_dir, batch_size_per_rank=bs), seed=0, rank=rank, world_size=world)
        assert loader.batches_per_epoch == 200 // (world * bs)
        keys_per_rank.append([k for b in loader.iter_epoch(0) for k in b.keys])
    flat = [k for keys in keys_per_rank for k in keys]
    assert len(flat) == len(set(flat)) == world * (200 // (world * bs)) * bs  # no duplicates, equal shares
    loader = PretrainLoader(tiny_cfg(shard_dir, batch_size_per_rank=bs), seed=0, rank=0, world_size=world)
    again = [k for b in loader.iter_epoch(0) for k in b.keys]
    next_epoch = [k for b in loader.iter_epoch(1) for k in b.keys]
    other_seed = PretrainLoader(tiny_cfg(shard_dir, batch_size_per_rank=bs), seed=1, rank=0, world_size=world)
    assert again == keys_per_rank[0]
    assert next_epoch != again and [k for b in other_seed.iter_epoch(0) for k in b.keys] != again


def test_views_are_normalised_float_views_in_student_order(shard_dir):
    cfg = tiny_cfg(shard_dir)
    batch = next(PretrainLoader(cfg, seed=0, rank=0, world_size=1).iter_epoch(0))
    views = device_views(batch, "cpu")
    assert [tuple(v.shape) for v in views] == [(8, 3, 64, 32)] * 2 + [(8, 3, 32, 16)] * 2
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    assert batch.masks.shape == (2, 8, (64 // 8) * (32 // 8)) and batch.masks.dtype == torch.bool
    assert batch.masks.any() and not batch.masks.all()
    unmasked = PretrainLoader(replace(cfg, pred_start_epoch=1), seed=0, rank=0, world_size=1)
    assert not next(unmasked.iter_epoch(0)).masks.any()
    # Grouping by resolution must hand each view its own parameters.
    for v, crops in enumerate(batch.global_crops + batch.local_crops):
        alone = apply_photometric(crops, batch.photometric.map(lambda t, v=v: t[v]), batch.max_sigma)
        torch.testing.assert_close(views[v], alone, atol=1e-5, rtol=0)


def test_corrupt_samples_are_counted_and_bounded(tmp_path):
    bad = frozenset({"img00003", "img00120"})
    root = write_shards(tmp_path / "bad", corrupt=bad)
    loader = PretrainLoader(tiny_cfg(root, max_corrupt=2, num_workers=2), seed=0, rank=0, world_size=1)
    batches = list(loader.iter_epoch(0))
    assert loader.corrupt_skipped == 2
    reports = sorted(r.split(":")[0].split("/")[-1] for b in batches for r in b.corrupt)
    assert reports == sorted(bad)
    assert all(b.global_crops[0].shape[0] == 8 for b in batches)
    strict = PretrainLoader(tiny_cfg(root, max_corrupt=1), seed=0, rank=0, world_size=1)
    with pytest.raises(CorruptDataError, match=r"max_corrupt=1.*train-0000\d\d\.tar/img00(003|120)"):
        list(strict.iter_epoch(0))


def test_bad_shard_sets_give_one_line_errors(tmp_path):
    with pytest.raises(ShardError, match="no manifest.json"):
        PretrainLoader(tiny_cfg(tmp_path), seed=0, rank=0, world_size=1)
    root = write_shards(tmp_path / "s", sizes=(5, 6))
    with pytest.raises(ShardError, match="11 samples cannot fill one batch on each of 2 ranks"):
        PretrainLoader(tiny_cfg(root), seed=0, rank=0, world_size=2)
    with pytest.raises(ShardError, match="no split 'query'"):
        PretrainLoader(tiny_cfg(root, split="query"), seed=0, rank=0, world_size=1)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][1]["samples"] = 7
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="train-000001.tar: manifest lists 7 samples, the tar holds 6"):
        list(PretrainLoader(tiny_cfg(root, batch_size_per_rank=12), seed=0, rank=0, world_size=1).iter_epoch(0))
    (root / "train-000001.tar").unlink()
    with pytest.raises(ShardError, match="listed shard train-000001.tar is missing"):
        PretrainLoader(tiny_cfg(root), seed=0, rank=0, world_size=1)
    (root / "manifest.json").write_text(json.dumps({"splits": {}}))
    with pytest.raises(ShardError, match="format None, expected 'personvit-shards/1'"):
        PretrainLoader(tiny_cfg(root), seed=0, rank=0, world_size=1)


_DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from personvit.config.data import PretrainDataConfig
    from personvit.data.pretrain_loader import PretrainLoader
    from personvit.distributed import all_reduce_sum_, init_distributed, shutdown
    info = init_distributed(backend="gloo", timeout_s=120)
    cfg = PretrainDataConfig(shards=sys.argv[1], batch_size_per_rank=8, num_workers=2 * info.rank,
                             global_size=(32, 16), local_size=(16, 16), n_local=1, patch_size=8)
    loader = PretrainLoader(cfg, seed=11, rank=info.rank, world_size=info.world_size)
    out = {"rank": info.rank, "batches_per_epoch": loader.batches_per_epoch, "steps": [], "keys": []}
    for epoch in range(2):
        steps = 0
        for batch in loader.iter_epoch(epoch):
            # Every batch is a collective, as a DDP step is: a rank with one batch more would block here.
            t = torch.tensor([float(batch.global_crops[0].float().mean()), 1.0])
            all_reduce_sum_(t)
            steps += 1
            out["keys"] += [f"{epoch}:{k}" for k in batch.keys]
        out["steps"].append(steps)
    print(json.dumps(out), flush=True)
    shutdown()
    """
)


def test_equal_batch_counts_per_rank_with_uneven_shards_under_gloo(tmp_path):
    """Two real gloo ranks (0 and 2 workers) over very uneven shards: same step count, disjoint samples."""
    root = write_shards(tmp_path / "uneven", sizes=(3, 41, 17, 60, 9, 22))  # 152 samples: 9 batches x 2 ranks + 8
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, "-c", _DDP_SCRIPT, str(root)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert [r["batches_per_epoch"] for r in results] == [152 // 16] * 2
    assert [r["steps"] for r in results] == [[9, 9], [9, 9]]
    keys0, keys1 = set(results[0]["keys"]), set(results[1]["keys"])
    assert len(keys0) == len(keys1) == 2 * 9 * 8 and not keys0 & keys1


def test_resume_skips_by_index_without_decoding_skipped_samples(tmp_path):
    root = write_shards(tmp_path / "bad", corrupt=frozenset({"img00042"}))
    tolerant = PretrainLoader(tiny_cfg(root, max_corrupt=1), seed=2, rank=0, world_size=1)
    where = next(b.index for b in tolerant.iter_epoch(0) if b.corrupt)
    assert where + 1 < tolerant.batches_per_epoch
    strict = PretrainLoader(tiny_cfg(root, max_corrupt=0, num_workers=2), seed=2, rank=0, world_size=1)
    with pytest.raises(CorruptDataError, match="img00042"):
        list(strict.iter_epoch(0))
    resumed = list(strict.iter_epoch(0, start_batch=where + 1))  # the corrupt sample is never decoded
    assert len(resumed) == strict.batches_per_epoch - where - 1 and strict.corrupt_skipped == 1


@pytest.mark.parametrize(
    "values, message",
    [
        ({}, "missing required config value 'data.shards'"),
        ({"shards": "s", "global_size": [250, 128]}, "global_size [250, 128] must be divisible by patch_size 16"),
        ({"shards": "s", "aspect": [0.7, 0.3]}, "aspect must be an increasing pair"),
        ({"shards": "s", "blur_p": [1.0, 1.2, 0.5]}, "blur_p must be a probability in [0, 1], got 1.2"),
        ({"shards": "s", "pred_ratio": [0.0, 0.3], "pred_ratio_var": [0.0]}, "same length"),
        ({"shards": "s", "batch_size_per_rank": 0}, "batch_size_per_rank must be >= 1"),
        ({"shards": "s", "n_local": "six"}, "'data.n_local': expected an integer"),
    ],
)
def test_config_mistakes_are_one_line_errors_naming_the_key(values, message):
    from personvit.config.core import ConfigError, from_dict

    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        from_dict(PretrainDataConfig, values, prefix="data")
    assert "\n" not in str(err.value)
