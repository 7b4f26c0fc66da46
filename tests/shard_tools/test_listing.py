"""The columnar listing: sorted walk in bounded memory, path store, per-file memory, what workers get."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest

import shard_tools.keys as keys
import shard_tools.plan as plan_mod
import shard_tools.sources.table as table_mod
import shard_tools.sources.walk as walk_mod
from shard_tools.plan import PackOptions, make_plan
from shard_tools.sources import open_source
from shard_tools.sources.base import Listing
from shard_tools.sources.table import PathStore, PathWriter, Record, table_of
from shard_tools.sources.walk import walk_files

# '-', '.', ' ' sort before '/', so a depth-first walk over sorted entries would put 'a/x' first
TRICKY = ["a/x.jpg", "a-b/y.jpg", "a.b/z.jpg", "ab/w.jpg", "a/b/c.jpg", "a/b-c.jpg", "a b/q.jpg", "a/b/c/d.jpg",
          "A/up.jpg", "é/e.jpg", "a_b/x.jpg", "z.jpg", "a0/n.jpg"]


def set_buffers(monkeypatch, run: int, readahead: int, block: int, spill: int, batch: int) -> None:
    """Set the bounded buffers of the walk, the path store and the planner."""
    monkeypatch.setattr(walk_mod, "RUN", run)
    monkeypatch.setattr(walk_mod, "MERGE_READAHEAD", readahead)
    monkeypatch.setattr(walk_mod, "MIN_BLOCK", block)
    monkeypatch.setattr(table_mod, "SPILL_BYTES", spill)
    monkeypatch.setattr(table_mod, "BATCH", batch)
    monkeypatch.setattr(plan_mod, "BATCH", batch)


@pytest.fixture
def small_buffers(monkeypatch):
    """Shrink every bounded buffer so that tiny inputs exercise runs, merges, spills and batches."""
    set_buffers(monkeypatch, run=3, readahead=16, block=1, spill=16, batch=4)


def touch(root, names):
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


@pytest.mark.parametrize("merged", [False, True])
def test_walk_order_is_sorted_full_paths(tmp_path, request, merged):
    if merged:
        request.getfixturevalue("small_buffers")
    touch(tmp_path, [*TRICKY, ".hidden/x.jpg", "a/.DS_Store"])
    got = list(walk_files(tmp_path))
    assert got == sorted(TRICKY)
    assert got.index("a-b/y.jpg") < got.index("a/x.jpg") < got.index("a0/n.jpg")  # not a sorted-entry DFS


def test_luperson_listing_order_with_spilled_paths(tmp_path, files, small_buffers):
    files(tmp_path / "lup" / "images", TRICKY)
    lst = open_source("luperson", tmp_path / "lup").list()
    assert [r.path for r in lst.records] == sorted(f"images/{n}" for n in TRICKY)
    assert lst.distinct and lst.table.pid is None  # unlabeled: no pid/camid columns


def test_path_store_spills_and_reads_any_order(monkeypatch):
    monkeypatch.setattr(table_mod, "SPILL_BYTES", 10)
    monkeypatch.setattr(table_mod, "BATCH", 3)
    paths = [f"d{i % 3}/ü{i}\udcff.jpg" for i in range(20)] + [""]  # non-UTF-8 bytes survive (surrogateescape)
    w = PathWriter()
    for p in paths:
        w.add(p)
    store = w.finish()
    assert store._file is not None and len(store) == len(paths)
    shuffled = np.random.default_rng(0).permutation(len(paths))
    in_order = np.arange(len(paths))  # read in runs (one call per run), not row by row
    repeated = np.array([5, 5, 20, 0, 20, 6, 7, 8, 3])
    for rows in (shuffled, in_order, repeated):
        assert store.take(rows) == [paths[i] for i in rows]
        assert PathStore.from_strings(paths).take(rows) == store.take(rows)


@pytest.mark.parametrize("path", ["images/0001_c1s1_000451_03.jpg", "a.b/x.png.jpg", "x/.hidden", "noext", "a b/é-1.jpg",
                                  'we"ird\\name ü.jpg', "dir.v2/file", "\udcff.jpg", "", ".", "a/b."])
def test_sample_key_equals_the_regex_rule(path):
    import re

    dot, slash = path.rfind("."), path.rfind("/")
    assert keys.sample_key(path) == re.sub(r"[^A-Za-z0-9_-]", "_", path[:dot] if dot > slash + 1 else path)


def _plan_bytes(tmp_path, n: int) -> tuple[int, int, object]:
    root = tmp_path / str(n)
    for d in range(7):
        (root / f"v{d}").mkdir(parents=True)
    for i in range(n):
        (root / f"v{i % 7}" / f"{i:06d}_c{i % 5}.jpg").write_bytes(b"")
    tracemalloc.start()
    try:
        plan = make_plan(open_source("luperson", root).list(), PackOptions(maxcount=500), "luperson")
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held, peak, plan


def test_listing_and_plan_memory_per_file_is_small(tmp_path, monkeypatch):
    # Buffers that are bounded by design (sort runs, read batches, in-memory paths) are made small,
    # so that what remains grows with the file count: ~11 B per file held (uint32 path offset, split
    # code, int32 plan row, shard objects), ~18 B at the peak (+ 64-bit key hashes while planning).
    # One Python object per file would cost 50-250 B.
    set_buffers(monkeypatch, run=256, readahead=4096, block=256, spill=4096, batch=256)
    _plan_bytes(tmp_path / "warm", 300)  # first-call caches (imports, regex, numpy RNG) out of the way
    held_a, peak_a, _ = _plan_bytes(tmp_path, 2000)
    held_b, peak_b, plan = _plan_bytes(tmp_path, 8000)
    assert sum(len(s) for s in plan.shards) == 8000
    per_file_held, per_file_peak = (held_b - held_a) / 6000, (peak_b - peak_a) / 6000
    assert per_file_held < 16, per_file_held
    assert per_file_peak < 32, per_file_peak


def test_a_pickled_shard_carries_only_its_rows(tmp_path, small_buffers):
    touch(tmp_path, [f"v{i % 5}/{i:05d}.jpg" for i in range(400)])
    plan = make_plan(open_source("luperson", tmp_path).list(), PackOptions(maxcount=10), "luperson")
    shard = plan.shards[7]
    sent = pickle.dumps(shard)
    assert len(sent) < 2000  # 10 rows; the listing (400 paths) is not sent
    back = pickle.loads(sent)
    assert (back.name, len(back), list(back.slots())) == (shard.name, 10, list(shard.slots()))


def test_duplicates_are_dropped_exactly_once_keeping_the_first(small_buffers):
    recs = [Record("train", "a.jpg", 1, 0), Record("train", "b.jpg", 1, 0), Record("train", "a.jpg", 1, 0),
            Record("train", "a.jpg", 2, 0), Record("query", "a.jpg", 1, 0), Record("train", "a.jpg", 1, 0)]
    plan = make_plan(Listing(table_of(recs)), PackOptions(shuffle_train=False), "x")
    assert plan.dropped == {"duplicate path": 2}
    got = [(k, r) for s in plan.shards for k, r in s.slots()]
    assert [r for _, r in got] == [recs[0], recs[1], recs[3], recs[4]]
    assert [k for k, _ in got] == ["a", "b", "a_1", "a_2"]  # keys unique across the set, renamed in plan order


def test_hash_collisions_between_different_keys_change_nothing(tmp_path, monkeypatch, small_buffers):
    touch(tmp_path, ["a.b/x.jpg", "a_b/x.jpg", "a_b/x_1.jpg", "c/x.png.jpg", "q/r.jpg", "s.jpg"])
    lst = open_source("luperson", tmp_path).list()
    want = make_plan(lst, PackOptions(seed=3), "luperson")
    real = keys.stable_hash
    monkeypatch.setattr(keys, "stable_hash", lambda text: real("s" if text == "q_r" else text))  # q_r ~ s
    second_pass = []
    find = keys.rows_hashing_to
    monkeypatch.setattr(keys, "rows_hashing_to", lambda *a: second_pass.append(1) or find(*a))
    got = make_plan(lst, PackOptions(seed=3), "luperson")
    assert second_pass  # the collision check compared real keys
    slots = [[list(s.slots()) for s in p.shards] for p in (want, got)]
    assert slots[0] == slots[1] and want.fingerprint == got.fingerprint
    assert sorted(k for k, _ in slots[0][0]) == ["a_b_x", "a_b_x_1", "a_b_x_2", "c_x_png", "q_r", "s"]
