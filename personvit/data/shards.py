"""Shard listing, the epoch's global sample order, and indexed reads of samples from tar shards.

The order of an epoch is a pure function of (seed, epoch, manifest): shards are permuted, cut into
groups of `group_size` consecutive shards, and the samples of each group are permuted. Position `p`
of the epoch maps to one (shard, member) pair; nothing of size "whole dataset" is ever built, so
memory stays flat as the dataset grows (one group's permutation at a time).

Ranks take contiguous, equal blocks of positions (the remainder is dropped, a different one every
epoch), so every rank has the same number of batches and each reads about 1/world_size of the
shards. Reads go through a per-shard member index (tar headers only), so a sample is fetched by
offset: resuming mid-epoch skips samples without reading or decoding them.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personvit.data.format import FORMAT, IMAGE_EXT, MANIFEST_NAME
from personvit.data.tar_reader import TarReadError, iter_members
from personvit.rng import Stream, numpy_rng

MANIFEST_FORMAT = FORMAT


class ShardError(ValueError):
    """A shard set that does not match its manifest, or an unreadable manifest; names the file."""


@dataclass(frozen=True)
class ShardInfo:
    """One tar shard as listed in the manifest.

    Attributes:
        name: file name inside the shard folder.
        path: full path.
        num_samples: samples the manifest promises.
    """

    name: str
    path: Path
    num_samples: int


def read_manifest(root: str | Path, split: str = "train") -> list[ShardInfo]:
    """The shards of one split, in manifest order.

    Args:
        root: the shard folder (holding `manifest.json`).
        split: split name, e.g. `train`.
    Raises:
        ShardError: missing/invalid manifest, unknown split, or a listed shard missing on disk.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ShardError(f"no {MANIFEST_NAME} in shard folder {root}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != MANIFEST_FORMAT:
        raise ShardError(f"{path}: format {fmt!r}, expected {MANIFEST_FORMAT!r} (written by shard-tools pack)")
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ShardError(f"{path}: no split '{split}' (splits: {', '.join(sorted(splits)) or 'none'})")
    shards = []
    for entry in splits[split].get("shards", []):
        name, count = entry.get("name"), entry.get("samples")
        if not isinstance(name, str) or not isinstance(count, int):
            raise ShardError(f"{path}: shard entry without a name and a sample count: {entry!r}")
        shard_path = root / name
        if not shard_path.is_file():
            raise ShardError(f"{path}: listed shard {name} is missing")
        if count > 0:
            shards.append(ShardInfo(name, shard_path, count))
    if not shards:
        raise ShardError(f"{path}: split '{split}' holds no samples")
    return shards


class EpochOrder:
    """Maps each position of an epoch to a (shard index, member index) pair.

    Args:
        counts: samples per shard, in manifest order.
        seed: run seed.
        epoch: epoch number.
        group_size: shards whose samples are shuffled together.
    """

    def __init__(self, counts: list[int], seed: int, epoch: int, group_size: int) -> None:
        self.seed, self.epoch = seed, epoch
        perm = numpy_rng(seed, Stream.ORDER, epoch, 0).permutation(len(counts))
        self.groups = [perm[i : i + group_size].tolist() for i in range(0, len(perm), group_size)]
        sizes = [sum(counts[s] for s in g) for g in self.groups]
        self.group_starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.counts = counts
        self._cache: OrderedDict[int, tuple[np.ndarray, list[int]]] = OrderedDict()

    @property
    def total(self) -> int:
        return self.group_starts[-1]

    def _group(self, g: int) -> tuple[np.ndarray, list[int]]:
        # A worker walks positions forward, so a 2-entry cache holds the current and next group.
        if g not in self._cache:
            perm = numpy_rng(self.seed, Stream.ORDER, self.epoch, 1 + g).permutation(
                self.group_starts[g + 1] - self.group_starts[g]
            )
            starts = np.cumsum([0] + [self.counts[s] for s in self.groups[g]]).tolist()
            self._cache[g] = (perm, starts)
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        return self._cache[g]

    def locate(self, position: int) -> tuple[int, int]:
        """(shard index in manifest order, sample index inside that shard) of `position`."""
        if not 0 <= position < self.total:
            raise IndexError(f"position {position} outside epoch of {self.total} samples")
        g = bisect.bisect_right(self.group_starts, position) - 1
        perm, starts = self._group(g)
        offset = int(perm[position - self.group_starts[g]])
        k = bisect.bisect_right(starts, offset) - 1
        return self.groups[g][k], offset - starts[k]


@dataclass(frozen=True)
class MemberRef:
    """Where one sample's image bytes sit inside its tar."""

    key: str
    offset: int
    size: int


def index_tar(path: Path, ext: str = IMAGE_EXT) -> list[MemberRef]:
    """Sample index of a tar shard from its headers (data is seeked over, not read).

    Samples are grouped as webdataset does: key = member path up to the first dot of its basename,
    in order of first appearance. A sample without an `ext` member gets size -1 (read as corrupt).
    """
    refs: dict[str, MemberRef] = {}
    try:
        for m in iter_members(path):
            if not m.is_file:
                continue
            if m.key not in refs:
                refs[m.key] = MemberRef(m.key, 0, -1)
            if m.ext == ext:
                refs[m.key] = MemberRef(m.key, m.offset, m.size)
    except TarReadError as e:
        raise ShardError(str(e)) from None
    return list(refs.values())


class ShardReader:
    """Reads sample bytes by (shard, index) with a small cache of open shards and their indices.

    Args:
        shards: the split's shards (manifest order).
        ext: member extension holding the image.
        cache_size: open shards kept (a worker touches a few shards at a time).
    """

    def __init__(self, shards: list[ShardInfo], ext: str = IMAGE_EXT, cache_size: int = 8) -> None:
        self.shards, self.ext, self.cache_size = shards, ext, cache_size
        self._open: OrderedDict[int, tuple[list[MemberRef], object]] = OrderedDict()

    def _get(self, s: int) -> tuple[list[MemberRef], object]:
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        info = self.shards[s]
        refs = index_tar(info.path, self.ext)
        if len(refs) != info.num_samples:
            raise ShardError(f"{info.path}: manifest lists {info.num_samples} samples, the tar holds {len(refs)}")
        self._open[s] = (refs, open(info.path, "rb"))
        while len(self._open) > self.cache_size:
            _, (_, f) = self._open.popitem(last=False)
            f.close()
        return self._open[s]

    def read(self, shard: int, index: int) -> tuple[str, bytes | None]:
        """(key, image bytes or None when the sample has no image member)."""
        refs, f = self._get(shard)
        ref = refs[index]
        if ref.size < 0:
            return ref.key, None
        f.seek(ref.offset)
        return ref.key, f.read(ref.size)

    def close(self) -> None:
        for _, f in self._open.values():
            f.close()
        self._open.clear()
