"""Columnar listings: millions of records as a few numpy arrays plus one path store, not Python objects.

A 4M-image listing held as `Record` objects costs ~0.9 GB (~220 B each, mostly the path strings).
Here a record is a row: the UTF-8 bytes of its path at `offsets[i]:offsets[i + 1]` of one store,
a split code and, for labeled sets, pid and camid: 5 bytes per row in memory for LUPerson (uint32
offsets while the paths total under 4 GiB), 13 for the ReID sets. Path bytes past `SPILL_BYTES`
go to an anonymous temporary file read with `os.pread`; never through mmap, whose pages would
count as resident memory (and the kernel's fault-around maps 64 KiB per random row read).
`Record` objects exist only for the rows being written (`RecordTable.records`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import NamedTuple

import numpy as np

UNLABELED = -1  # pid / camid of images without identity (LUPerson)
SPLITS = ("train", "query", "gallery")  # split codes index this tuple, which is also the plan's order
SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}
SPILL_BYTES = 1 << 20  # path bytes held in memory before they move to a temporary file
BATCH = 4096  # rows read per batch: bounds the Python objects alive at once
GAP = 256  # wanted paths at most this many bytes apart are read together (one call beats two)
_U32 = next(c for c in "IL" if array(c).itemsize == 4)  # array's typecode for uint32 on this platform


class Record(NamedTuple):
    """One source image, made from a table row only while its shard is written.

    A NamedTuple, not a frozen dataclass: one is made per image written, and a frozen dataclass's
    __init__ (object.__setattr__ per field) costs ~4x as much.

    Args:
        split: `train`, `query` or `gallery`.
        path: location relative to the source root (also the record's identity).
        pid: person id (`UNLABELED` for LUPerson).
        camid: 0-based camera id (`UNLABELED` for LUPerson).
    """

    split: str
    path: str
    pid: int = UNLABELED
    camid: int = UNLABELED


def _encode(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")  # any file name round-trips, even non-UTF-8 bytes


class PathStore:
    """Paths by row: bytes `offsets[i]:offsets[i + 1]` of `data`, or of `file` when data is None.

    Args:
        data: the path bytes in memory (small stores), or None.
        offsets: uint32 or int64, one more than the rows.
        file: the temporary file holding the path bytes when `data` is None.
    """

    def __init__(self, data: bytes | None, offsets: np.ndarray, file=None):
        self._data, self.offsets, self._file = data, offsets, file

    @classmethod
    def from_strings(cls, paths: Sequence[str]) -> PathStore:
        """An in-memory store of `paths` (a shard's worth: what a writer process receives)."""
        raw = [_encode(p) for p in paths]
        offsets = np.zeros(len(raw) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, raw), np.int64, len(raw)), out=offsets[1:])
        return cls(b"".join(raw), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _read(self, rows: np.ndarray) -> list[str]:
        """The paths of `rows`, in their order."""
        starts, ends = self.offsets[rows].astype(np.int64), self.offsets[rows + 1].astype(np.int64)
        if self._data is not None:
            data = self._data
            return [data[a:e].decode("utf-8", "surrogateescape") for a, e in zip(starts.tolist(), ends.tolist())]
        fd = self._file.fileno()
        order = np.argsort(starts, kind="stable")
        sorted_starts, sorted_ends = starts[order], ends[order]
        cuts = [0, *(np.flatnonzero(sorted_starts[1:] - sorted_ends[:-1] > GAP) + 1).tolist(), len(order)]
        if len(cuts) > len(order) // 2:  # scattered rows (a shuffled shard): one read each, in their order
            return [os.pread(fd, e - a, a).decode("utf-8", "surrogateescape")
                    for a, e in zip(starts.tolist(), ends.tolist())]
        # runs of near neighbours (a pass in listing order): one read per run
        s, e, pos = sorted_starts.tolist(), sorted_ends.tolist(), order.tolist()
        out: list[str] = [""] * len(pos)
        for i, j in zip(cuts[:-1], cuts[1:]):
            base = s[i]
            buf = os.pread(fd, max(e[i:j]) - base, base)
            for k in range(i, j):
                out[pos[k]] = buf[s[k] - base:e[k] - base].decode("utf-8", "surrogateescape")
        return out

    def batches(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, list[str]]]:
        """(rows, their paths) per batch of at most BATCH rows of `rows`, in the given order."""
        for s in range(0, len(rows), BATCH):
            b = rows[s:s + BATCH]
            yield b, self._read(b)

    def take(self, rows: np.ndarray) -> list[str]:
        """The paths of `rows` (any order); for a shard's rows, not for the whole listing."""
        out: list[str] = []
        for _, paths in self.batches(rows):
            out += paths
        return out


class PathWriter:
    """Appends paths; `finish()` gives their PathStore (in memory if small, else in a temporary file)."""

    def __init__(self):
        self._buf = bytearray()
        self._ends = array(_U32, [0])  # 4 bytes per row, no Python object per row; int64 past 4 GiB
        self._file = None

    def add(self, path: str) -> None:
        raw = _encode(path)
        self._buf += raw
        end = self._ends[-1] + len(raw)
        if end > 0xFFFFFFFF and self._ends.typecode == _U32:
            self._ends = array("q", self._ends)
        self._ends.append(end)
        if len(self._buf) >= SPILL_BYTES:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="shard-tools-paths-")  # in $TMPDIR; gone when closed
        self._file.write(self._buf)
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._ends) - 1

    def finish(self) -> PathStore:
        offsets = np.frombuffer(self._ends, np.uint32 if self._ends.typecode == _U32 else np.int64)  # no copy
        if self._file is None:
            return PathStore(bytes(self._buf), offsets)
        self._spill()
        self._file.flush()
        return PathStore(None, offsets, self._file)


@dataclasses.dataclass(frozen=True, eq=False)
class RecordTable:
    """A source's records as columns, addressed by row.

    Args:
        paths: the relative paths.
        split: uint8 codes into SPLITS.
        pid, camid: int32 columns, or None when every row is UNLABELED (LUPerson: saves 8 B a row).
    """

    paths: PathStore
    split: np.ndarray
    pid: np.ndarray | None = None
    camid: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.split)

    def scan(self) -> Iterator[tuple[np.ndarray, list[str]]]:
        """(rows, paths) of every row in listing order, a batch at a time: sequential reads."""
        for s in range(0, len(self), BATCH):
            yield from self.paths.batches(np.arange(s, min(s + BATCH, len(self))))

    def labels(self, rows: np.ndarray) -> tuple[list[int], list[int]] | tuple[repeat, repeat]:
        """(pids, camids) of `rows` as Python ints (an endless UNLABELED for unlabeled tables)."""
        if self.pid is None:
            return repeat(UNLABELED), repeat(UNLABELED)
        return self.pid[rows].tolist(), self.camid[rows].tolist()

    def records(self, rows: np.ndarray) -> list[Record]:
        """`rows` as Record objects: for one shard or a small set, never for the whole listing."""
        out: list[Record] = []
        for b, paths in self.paths.batches(rows):
            pids, cams = self.labels(b)
            out += map(Record, [SPLITS[c] for c in self.split[b].tolist()], paths, pids, cams)
        return out

    def take(self, rows: np.ndarray) -> RecordTable:
        """`rows` as a small in-memory table: what a writer process is sent for one shard."""
        pid = None if self.pid is None else self.pid[rows]
        camid = None if self.camid is None else self.camid[rows]
        return RecordTable(PathStore.from_strings(self.paths.take(rows)), self.split[rows], pid, camid)


class TableBuilder:
    """Collects rows one by one (bounded memory per row); `build()` gives the RecordTable.

    Args:
        labeled: store pid and camid; False for sets where every row is UNLABELED.
    """

    def __init__(self, labeled: bool = True):
        self.paths = PathWriter()
        self._split = array("B")
        self._pid = array("i") if labeled else None
        self._camid = array("i") if labeled else None

    def add(self, split: str, path: str, pid: int = UNLABELED, camid: int = UNLABELED) -> None:
        """Append one record."""
        code = SPLIT_CODE.get(split)
        if code is None:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if self._pid is None:
            if pid != UNLABELED or camid != UNLABELED:
                raise ValueError("this table is unlabeled: pid and camid must be UNLABELED")
        else:
            self._pid.append(pid)
            self._camid.append(camid)
        self._split.append(code)
        self.paths.add(path)

    def __len__(self) -> int:
        return len(self._split)

    def build(self) -> RecordTable:
        split = np.frombuffer(self._split, np.uint8) if len(self._split) else np.zeros(0, np.uint8)
        if self._pid is None:
            return RecordTable(self.paths.finish(), split)
        pid, camid = (np.frombuffer(a, np.intc).astype(np.int32, copy=False) if len(a) else np.zeros(0, np.int32)
                      for a in (self._pid, self._camid))
        return RecordTable(self.paths.finish(), split, pid, camid)


def table_of(records: Sequence[Record], labeled: bool = True) -> RecordTable:
    """A table holding `records` (tests and small sources)."""
    b = TableBuilder(labeled)
    for r in records:
        b.add(r.split, r.path, r.pid, r.camid)
    return b.build()
