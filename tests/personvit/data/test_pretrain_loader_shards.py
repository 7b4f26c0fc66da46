"""Shard side of the pretraining loader: manifests from `shard_tools pack`, the epoch order, indexed reads."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import webdataset as wds

from personvit.config.data import PretrainDataConfig
from personvit.data.batch_layout import BatchLayout
from personvit.data.pretrain_loader import PretrainLoader
from personvit.data.shards import EpochOrder, ShardReader, read_manifest
from shard_tools.pack import pack
from shard_tools.synth import make_synthetic


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """Synthetic pedestrians packed like LUPerson by the real shard_tools (uneven last shard)."""
    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root / "src", identities=2, cameras=2, unlabeled=130, seed=0)
    pack("luperson", root / "src" / "unlabeled", root / "shards", maxcount=40, progress=False)
    return root / "shards"


def test_reads_shard_tools_manifest(packed):
    shards = read_manifest(packed, "train")
    assert [s.num_samples for s in shards] == [40, 40, 40, 10]
    assert all(s.path.parent == packed and s.path.is_file() for s in shards)


def test_indexed_reads_match_plain_webdataset(packed):
    shards = read_manifest(packed)
    reference = {
        s["__key__"]: s["jpg"]
        for s in wds.WebDataset([str(s.path) for s in shards], shardshuffle=False, empty_check=False)
    }
    order = EpochOrder([s.num_samples for s in shards], seed=0, epoch=0, group_size=2)
    reader = ShardReader(shards, cache_size=2)  # smaller than the shards touched: exercises reopening
    got = dict(reader.read(*order.locate(p)) for p in range(order.total))
    reader.close()
    assert got == reference and len(got) == 130


def test_loader_streams_shard_tools_output(packed):
    cfg = PretrainDataConfig(shards=str(packed), batch_size_per_rank=16, num_workers=2, global_size=(64, 32),
                             local_size=(32, 16), n_local=2, patch_size=8)
    loader = PretrainLoader(cfg, seed=0, rank=0, world_size=1)
    keys = [k for b in loader.iter_epoch(0) for k in b.keys]
    assert loader.batches_per_epoch == 130 // 16 and len(keys) == len(set(keys)) == 128
    assert loader.corrupt_skipped == 0


@pytest.mark.parametrize("group_size", [1, 3, 100])
def test_epoch_order_is_a_permutation_that_mixes_within_groups(group_size):
    counts = [7, 1, 12, 30, 5, 9, 16]
    order = EpochOrder(counts, seed=4, epoch=2, group_size=group_size)
    pairs = [order.locate(p) for p in range(order.total)]
    assert sorted(pairs) == [(s, i) for s, c in enumerate(counts) for i in range(c)]
    again = EpochOrder(counts, seed=4, epoch=2, group_size=group_size)
    assert [again.locate(p) for p in reversed(range(order.total))] == pairs[::-1]  # random access, same answer
    # Consecutive positions stay inside one group of `group_size` shards.
    shards_seen = {s for s, _ in pairs[:7]}
    assert len(shards_seen) <= min(group_size, len(counts)) + 1
    assert pairs != [EpochOrder(counts, seed=4, epoch=3, group_size=group_size).locate(p) for p in range(order.total)]


def test_epoch_order_memory_does_not_grow_with_the_dataset():
    # 100k shards x 10k samples = 1e9 samples: only per-shard counts and one group's permutation live.
    counts = [10_000] * 100_000
    tracemalloc.start()
    order = EpochOrder(counts, seed=0, epoch=0, group_size=4)
    for p in (0, 123_456_789, order.total - 1):
        s, i = order.locate(p)
        assert 0 <= s < len(counts) and 0 <= i < 10_000
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert order.total == 10**9 and peak < 40 * 2**20


@pytest.mark.parametrize("total, bs, world", [(200, 8, 3), (152, 8, 2), (1000, 7, 5), (64, 64, 1)])
def test_rank_blocks_are_equal_contiguous_and_disjoint(total, bs, world):
    layout = BatchLayout.fresh(total, world, bs)
    per_rank = total // (bs * world)
    assert layout.batches_per_epoch == per_rank
    for r in range(world):
        share = layout.share(r, world, bs)
        assert share.micro_batches == 1 and share.samples == bs
        block = [p for b in range(per_rank) for p in layout.positions(b, share.first, bs)]
        assert block == list(range(r * per_rank * bs, (r + 1) * per_rank * bs))  # contiguous, as always
    assert (world * per_rank * bs) <= total
