"""From a source listing to a shard plan: subset, order, sample keys, shard boundaries.

The plan is a pure function of the listing and the options, computed identically by every process
and every array task. A shard is a fixed range of planned slots; its bytes therefore depend on
nothing but the plan, which is what makes the output identical for any `--workers`, for an array
split, and for a rerun after a kill. An image that turns out unreadable or corrupt while its shard
is written is skipped and listed, so that shard holds fewer samples than `maxcount` (the manifest's
per-shard counts are authoritative).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from shard_tools.sources.base import Listing, Record, Skip, SourceError, load_name_list

SPLIT_ORDER = ("train", "query", "gallery")
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


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its split, index, records and their sample keys.

    Keys are derived from paths when needed (`sample_key`) rather than stored: only the rare keys
    renamed to resolve a collision are kept, in `renamed`.
    """

    split: str
    index: int
    records: tuple[Record, ...]
    renamed: dict[Record, str] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}.tar"

    def __len__(self) -> int:
        return len(self.records)

    def slots(self):
        """(key, record) pairs in write order."""
        for r in self.records:
            yield self.renamed.get(r) or sample_key(r.path), r


_NOT_KEY_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(path: str) -> str:
    """A dot-free, slash-free key from a source path: `query/0001_c1s1_001051_00.jpg` -> `query_0001_c1s1_001051_00`."""
    dot, slash = path.rfind("."), path.rfind("/")
    return _NOT_KEY_CHAR.sub("_", path[:dot] if dot > slash + 1 else path)


def _subset(records: list[Record], opts: PackOptions, split: str) -> tuple[list[Record], int]:
    """Records kept by --fraction / --cfs-list, in listing order; also the CFS names not found."""
    if opts.cfs_list is not None:
        names = load_name_list(Path(opts.cfs_list))
        top = names[: math.ceil(opts.fraction * len(names))]
        by_name: dict[str, int] = {}
        for i, r in enumerate(records):
            by_name.setdefault(r.path, i)
            by_name.setdefault(Path(r.path).name, i)
        hits = {by_name[n] for n in top if n in by_name}
        missing = sum(1 for n in top if n not in by_name)
        return [records[i] for i in sorted(hits)], missing
    if opts.fraction >= 1.0:
        return records, 0
    k = round(opts.fraction * len(records))
    rng = np.random.default_rng([opts.seed, STREAM_SUBSET, SPLIT_ORDER.index(split)])
    keep = np.sort(rng.choice(len(records), size=k, replace=False))
    return [records[i] for i in keep], 0


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


def _stable_hash(key: str) -> int:
    """A 64-bit hash equal in every process (Python's `hash` of str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(),
                          "little", signed=True)


def _resolve_key_collisions(ordered: list[Record]) -> dict[Record, str]:
    """New keys for the records whose derived key repeats an earlier one (`a.b/c.jpg` vs `a_b/c.jpg`).

    A set of 4M key strings would cost ~0.4 GB; their 64-bit hashes in numpy cost 32 MB. Only the
    records whose hash repeats are compared by real key, so the result is exact and depends only
    on the plan order. A renamed key `base_N` skips every N whose key exists anywhere in the set.
    """
    hashes = np.fromiter((_stable_hash(sample_key(r.path)) for r in ordered), dtype=np.int64, count=len(ordered))
    known = np.sort(hashes)
    repeated = np.unique(known[1:][known[1:] == known[:-1]])

    def exists(key: str) -> bool:
        h = _stable_hash(key)
        i = int(np.searchsorted(known, h))
        return i < len(known) and known[i] == h

    renamed: dict[Record, str] = {}
    used: set[str] = set()
    for i in np.flatnonzero(np.isin(hashes, repeated)):  # ascending: plan order
        r = ordered[int(i)]
        key = base = sample_key(r.path)
        n = 0
        while key in used or (key != base and exists(key)):
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        if key != base:
            renamed[r] = key
    return renamed


def make_plan(listing: Listing, opts: PackOptions, source: str) -> Plan:
    """Subset, order, key and cut the listing into shards.

    Args:
        listing: the source's records (deterministic order).
        opts: packing options.
        source: the source name (part of the fingerprint).
    """
    dropped = dict(listing.dropped)
    by_split: dict[str, list[Record]] = {}
    seen: set[Record] = set()
    for r in listing.records:
        if r in seen:
            dropped["duplicate path"] = dropped.get("duplicate path", 0) + 1
            continue
        seen.add(r)
        by_split.setdefault(r.split, []).append(r)
    del seen
    ordered: list[tuple[str, list[Record]]] = []
    for split in SPLIT_ORDER:
        records, missing = _subset(by_split.get(split, []), opts, split)
        if missing:
            dropped["cfs names not found"] = dropped.get("cfs names not found", 0) + missing
        if opts.fraction < 1.0 or opts.cfs_list:
            dropped[f"{split}: not in subset"] = len(by_split.get(split, [])) - len(records)
        if split == "train" and opts.shuffle_train:
            order = np.random.default_rng([opts.seed, STREAM_ORDER]).permutation(len(records))
            records = [records[i] for i in order]
        ordered.append((split, records))
    renamed = _resolve_key_collisions([r for _, records in ordered for r in records])
    digest = hashlib.sha256(json.dumps([source, dataclasses.asdict(opts)], sort_keys=True).encode())
    shards: list[ShardPlan] = []
    for split, records in ordered:
        for r in records:
            digest.update(f"{split}\0{r.path}\0{r.pid}\0{r.camid}\0{renamed.get(r, '')}\n".encode("utf-8", "surrogateescape"))
        for i in range(0, len(records), opts.maxcount):
            chunk = tuple(records[i:i + opts.maxcount])
            own = {r: renamed[r] for r in chunk if r in renamed} if renamed else {}
            shards.append(ShardPlan(split, i // opts.maxcount, chunk, own))
    return Plan(shards, list(listing.skipped), dropped, digest.hexdigest())


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
