"""From a source listing to a shard plan: subset, order, sample keys, shard boundaries.

The plan is a pure function of the listing and the options, computed identically by every process
and every array task. A shard is a fixed range of planned slots; its bytes therefore depend on
nothing but the plan, which is what makes the output identical for any `--workers`, for an array
split, and for a rerun after a kill. An image that turns out unreadable or corrupt while its shard
is written is skipped and listed, so that shard holds fewer samples than `maxcount` (the manifest's
per-shard counts are authoritative).

Memory: the plan is numpy row indices into the listing's columnar table (4 bytes per image), plus
the rare renamed keys; records are materialised only for the shard being written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from personvit.data.format import shard_name
from shard_tools.keys import duplicate_rows, key_hashes, resolve_key_collisions, sample_key, stable_hash
from shard_tools.sources.base import Listing, Record, Skip, SourceError, load_name_list
from shard_tools.sources.table import BATCH, SPLITS, RecordTable

SPLIT_ORDER = SPLITS
# numpy seed-sequence streams (personvit.rng's Stream values would pull in torch: 3 s per CLI call)
STREAM_SUBSET, STREAM_ORDER = 101, 102


@dataclasses.dataclass(frozen=True)
class PackOptions:
    """What shapes the output (recorded in the manifest).

    Args:
        maxcount: samples per shard (all shards but the last of a split).
        fraction: keep this fraction of each split (random, seeded) or of the CFS list's top.
        cfs_list: pickled, score-sorted list of image names; keeps its top `fraction`.
        seed: seeds the random subset and the training-split order.
        shuffle_train: shuffle the training split before sharding (LUPerson folders are sorted by
            video, and a shard of one video would defeat the reader's shuffle buffer).
        decode_check: also entropy-decode every JPEG while packing (catches damaged Huffman tables
            and the like, ~10x slower); by default only the marker structure is checked (empty,
            non-JPEG, truncated, broken headers), and `shard-tools verify` decodes everything later.
    """

    maxcount: int = 10000
    fraction: float = 1.0
    cfs_list: str | None = None
    seed: int = 0
    shuffle_train: bool = True
    decode_check: bool = False

    def __post_init__(self):
        if self.maxcount < 1:
            raise SourceError(f"--maxcount must be >= 1, got {self.maxcount}")
        if not 0.0 < self.fraction <= 1.0:
            raise SourceError(f"--fraction must be in (0, 1], got {self.fraction}")


@dataclasses.dataclass(frozen=True, eq=False)
class ShardPlan:
    """One shard to write: its split, index, and the listing rows it holds, in write order.

    Keys are derived from paths when needed (`sample_key`) rather than stored: only the rare keys
    renamed to resolve a collision are kept, in `renamed` (row -> key). Pickling a ShardPlan (to a
    writer process) sends its own rows only, as a small table, never the listing.
    """

    split: str
    index: int
    rows: np.ndarray
    table: RecordTable
    renamed: dict[int, str] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)

    def __len__(self) -> int:
        return len(self.rows)

    def slots(self) -> Iterator[tuple[str, Record]]:
        """(key, record) pairs in write order, materialised a batch at a time."""
        for s in range(0, len(self.rows), BATCH):
            rows = self.rows[s:s + BATCH]
            for row, r in zip(rows.tolist(), self.table.records(rows)):
                yield self.renamed.get(row) or sample_key(r.path), r

    def __reduce__(self):
        renamed = {i: self.renamed[r] for i, r in enumerate(self.rows.tolist()) if r in self.renamed}
        own = np.arange(len(self.rows), dtype=self.rows.dtype)
        return ShardPlan, (self.split, self.index, own, self.table.take(self.rows), renamed)


def _cfs_subset(table: RecordTable, rows: np.ndarray, top: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The rows that `top` names by relative path or by file name (a name takes the first such row),
    in listing order; also which names matched a row (bool per name: a name may live in another split).

    Hashes of both spellings (16 B a row, while planning with a CFS list) stand in for a dict of
    every path and name; candidates are confirmed against the real strings.
    """
    m = len(rows)
    h = np.empty(2 * m, np.int64)  # path hashes, then file-name hashes
    s = 0
    for b, paths in table.paths.batches(rows):
        h[s:s + len(b)] = np.fromiter(map(stable_hash, paths), np.int64, len(b))
        h[m + s:m + s + len(b)] = np.fromiter((stable_hash(Path(p).name) for p in paths), np.int64, len(b))
        s += len(b)
    order = np.argsort(h, kind="stable")
    h.sort()  # in place: the same values as h[order], without a third array
    chosen = np.zeros(m, bool)
    found = np.zeros(len(top), bool)
    for c in range(0, len(top), BATCH):
        names = top[c:c + BATCH]
        wanted = np.fromiter(map(stable_hash, names), np.int64, len(names))
        lo, hi = np.searchsorted(h, wanted, "left").tolist(), np.searchsorted(h, wanted, "right").tolist()
        cands = [sorted({j % m for j in order[a:z].tolist()}) for a, z in zip(lo, hi)]  # positions, first first
        flat = sorted({i for cs in cands for i in cs})
        path = dict(zip(flat, table.paths.take(rows[np.array(flat, np.int64)])))
        for k, (name, cs) in enumerate(zip(names, cands)):
            best = next((i for i in cs if path[i] == name or Path(path[i]).name == name), None)
            if best is not None:
                chosen[best] = True
                found[c + k] = True
    return rows[chosen], found


def _subset(table: RecordTable, rows: np.ndarray, opts: PackOptions, split: str,
            cfs_top: list[str] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows kept by --fraction / --cfs-list, in listing order; with a CFS list also which names matched."""
    if cfs_top is not None:
        return _cfs_subset(table, rows, cfs_top)
    if opts.fraction >= 1.0:
        return rows, None
    k = round(opts.fraction * len(rows))
    rng = np.random.default_rng([opts.seed, STREAM_SUBSET, SPLIT_ORDER.index(split)])
    keep = np.sort(rng.choice(len(rows), size=k, replace=False))
    return rows[keep], None


@dataclasses.dataclass
class Plan:
    """The whole job: shards per split in write order, plus what was dropped while planning."""

    shards: list[ShardPlan]
    skipped: list[Skip]
    dropped: dict[str, int]
    fingerprint: str

    def splits(self) -> dict[str, list[ShardPlan]]:
        out: dict[str, list[ShardPlan]] = {}
        for s in self.shards:
            out.setdefault(s.split, []).append(s)
        return out


def _rows_of(split: np.ndarray, code: int, dtype: type) -> np.ndarray:
    """The rows (ascending) whose split code is `code`, filled in chunks: np.flatnonzero over the whole
    column would make an int64 array, 8 B a row, next to the result."""
    out = np.empty(int(np.count_nonzero(split == code)), dtype)
    k = 0
    for s in range(0, len(split), 1 << 16):
        hit = np.flatnonzero(split[s:s + (1 << 16)] == code)
        np.add(hit, s, out=out[k:k + len(hit)], casting="unsafe")
        k += len(hit)
    return out


def _without(rows: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """`rows` minus the (sorted, few) rows in `drop`."""
    if not len(drop):
        return rows
    pos = np.minimum(np.searchsorted(drop, rows), len(drop) - 1)
    return rows[drop[pos] != rows]


def _fingerprint(source: str, opts: PackOptions, table: RecordTable, ordered: list[tuple[str, np.ndarray]],
                 renamed: dict[int, str]) -> str:
    """sha256 of the source, the options, every listed record and the plan (rows in write order,
    renamed keys): equal fingerprints mean equal shards. The listing is read in its own order, which
    reads the paths sequentially; the plan enters as row numbers.
    """
    digest = hashlib.sha256(json.dumps([source, dataclasses.asdict(opts)], sort_keys=True).encode())
    for rows, paths in table.scan():
        pids, cams = table.labels(rows)
        digest.update("".join(f"{c}\0{p}\0{pid}\0{cam}\n" for c, p, pid, cam
                              in zip(table.split[rows].tolist(), paths, pids, cams)).encode("utf-8", "surrogateescape"))
    for split, rows in ordered:
        digest.update(f"{split}\0{len(rows)}\n".encode())
        for s in range(0, len(rows), 1 << 16):  # little-endian int64 in slices: equal on every host, no full copy
            digest.update(rows[s:s + (1 << 16)].astype("<i8").tobytes())
    digest.update(json.dumps(sorted(renamed.items())).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def make_plan(listing: Listing, opts: PackOptions, source: str) -> Plan:
    """Subset, order, key and cut the listing into shards.

    Args:
        listing: the source's rows (deterministic order).
        opts: packing options.
        source: the source name (part of the fingerprint).
    """
    table = listing.table
    dropped = dict(listing.dropped)
    index_dtype = np.int32 if len(table) < 2**31 else np.int64  # 4 B per planned image
    drop = np.empty(0, np.int64) if listing.distinct else duplicate_rows(table)
    if len(drop):
        dropped["duplicate path"] = len(drop)
    cfs_top = None
    if opts.cfs_list is not None:
        names = load_name_list(Path(opts.cfs_list))
        cfs_top = names[: math.ceil(opts.fraction * len(names))]
        del names
    ordered: list[tuple[str, np.ndarray]] = []
    cfs_found = None if cfs_top is None else np.zeros(len(cfs_top), bool)
    for code, split in enumerate(SPLIT_ORDER):
        listed = _without(_rows_of(table.split, code, index_dtype), drop)
        rows, found = _subset(table, listed, opts, split, cfs_top)
        if found is not None:
            cfs_found |= found  # a name is missing only when no split has it
        if opts.fraction < 1.0 or opts.cfs_list:
            dropped[f"{split}: not in subset"] = len(listed) - len(rows)
        ordered.append((split, rows))
    del listed
    if cfs_found is not None and not cfs_found.all():
        dropped["cfs names not found"] = int((~cfs_found).sum())
    known = key_hashes(table, [rows for _, rows in ordered])  # before the shuffle: sequential reads
    if opts.shuffle_train:
        # in place: the same order as indexing with rng.permutation(len(rows)), without its 8 B a row
        train = ordered[SPLIT_ORDER.index("train")][1]  # an array of its own (fresh from the subset step)
        np.random.default_rng([opts.seed, STREAM_ORDER]).shuffle(train)
    renamed = resolve_key_collisions(table, [rows for _, rows in ordered], known)
    del known
    shards: list[ShardPlan] = []
    for split, rows in ordered:
        for i in range(0, len(rows), opts.maxcount):
            chunk = rows[i:i + opts.maxcount]
            own = {r: renamed[r] for r in chunk.tolist() if r in renamed} if renamed else {}
            shards.append(ShardPlan(split, i // opts.maxcount, chunk, table, own))
    fingerprint = _fingerprint(source, opts, table, ordered, renamed)
    return Plan(shards, list(listing.skipped), dropped, fingerprint)


def array_slice(n_shards: int, index: int, count: int) -> range:
    """The contiguous shard range that array task `index` of `count` writes."""
    if count < 1 or not 0 <= index < count:
        raise SourceError(f"--array-index must be in [0, --array-count), got {index} of {count}")
    return range(index * n_shards // count, (index + 1) * n_shards // count)


def shard_advice(n_samples: int, maxcount: int, split: str, parallel: tuple[int, ...] = (8, 64, 512)) -> str:
    """A line on the shard count, with --maxcount values that make it a multiple of common reader counts.

    Readers give each rank x loader worker whole shards, so a shard count that is a multiple of
    ranks x workers keeps every reader equally busy. Only suggestions within 2x of `maxcount` are shown.
    """
    n = math.ceil(n_samples / maxcount) if n_samples else 0
    tips = []
    for p in parallel:
        if n and n % p:
            shards = max(p, round(n / p) * p)
            mc = math.ceil(n_samples / shards)
            if maxcount / 2 <= mc <= 2 * maxcount and math.ceil(n_samples / mc) % p == 0:
                tips.append(f"--maxcount {mc} -> {shards} shards (x{p})")
    last = n_samples - (n - 1) * maxcount if n else 0
    head = f"{split}: {n_samples} samples -> {n} shard(s) of {maxcount} (last {last})"
    return head + ("; multiples of ranks x workers: " + ", ".join(tips) if tips else "")
