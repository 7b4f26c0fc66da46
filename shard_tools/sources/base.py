"""What a dataset source yields: a listing (one row per image) and a way to read the bytes."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Protocol

import numpy as np

from shard_tools.sources.table import UNLABELED, Record, RecordTable
from shard_tools.sources.walk import walk_files

__all__ = ["UNLABELED", "Listing", "Record", "RecordTable", "Skip", "Source", "SourceError", "walk_files"]


class SourceError(Exception):
    """A missing or wrong-layout source folder; the message names what was expected."""


@dataclasses.dataclass(frozen=True)
class Skip:
    """An input left out, with the reason (listed in the manifest)."""

    split: str
    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"split": self.split, "path": self.path, "reason": self.reason}


@dataclasses.dataclass
class Listing:
    """A source's planned records as a columnar table, plus what was left out while listing.

    Args:
        table: images to pack, one row each, in a deterministic order.
        skipped: files that cannot be records (name does not follow the dataset's pattern, ...).
        dropped: counts of deliberately excluded images by rule (e.g. Market junk pid -1).
        distinct: rows are known to be distinct (a folder walk), so planning need not look for
            duplicates; list files and key lists may repeat an entry.
    """

    table: RecordTable
    skipped: list[Skip] = dataclasses.field(default_factory=list)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    distinct: bool = False

    def __len__(self) -> int:
        return len(self.table)

    @property
    def records(self) -> list[Record]:
        """Every row as a Record: for small sets and tests (4M of them would cost ~0.9 GB)."""
        return self.table.records(np.arange(len(self.table)))


class Source(Protocol):
    """A dataset source: lists records once (main process), reads bytes anywhere (workers)."""

    name: str
    root: Path

    def list(self) -> Listing: ...

    def read(self, path: str) -> bytes: ...


class FolderReader:
    """Reads record bytes from files under a root folder."""

    root: Path

    def read(self, path: str) -> bytes:
        # os-level calls, not open()/pathlib: half the ~14 us per small file, for 4M files
        fd = os.open(os.path.join(self.root, path), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size + 1)  # one byte more than expected: a short answer means EOF
            if len(data) == size:
                return data
            chunks = [data]  # grew, short read, or a size that lies (pipes, some network FS)
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
            return b"".join(chunks)
        finally:
            os.close(fd)


def require_dirs(root: Path, names: list[str], dataset: str) -> None:
    """Raise SourceError unless every folder in `names` exists under `root`."""
    if not root.is_dir():
        raise SourceError(f"{dataset}: source folder {root} does not exist")
    missing = [n for n in names if not (root / n).is_dir()]
    if missing:
        raise SourceError(f"{dataset}: expected folders {', '.join(names)} under {root}; missing: {', '.join(missing)}")


def find_root(src: Path, markers: list[str], candidates: list[str]) -> Path:
    """The dataset root: `src` itself if it holds `markers[0]`, else the first child in `candidates` that does.

    Users point at either the dataset folder or the folder that contains it (e.g. `data/`).
    """
    if (src / markers[0]).exists():
        return src
    for c in candidates:
        if (src / c / markers[0]).exists():
            return src / c
    return src


class _NamesOnly(pickle.Unpickler):
    """Unpickles only plain containers of strings/bytes/numbers: a key list must not run code."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: expected a plain list of names")


def load_name_list(path: Path) -> list[str]:
    """A pickled list (or tuple, or dict with a `keys`/`names` list) of names, as str.

    Args:
        path: the pickle (LUPerson `keys.pkl`, a CFS score-sorted list).
    """
    try:
        with open(path, "rb") as f:
            obj = _NamesOnly(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise SourceError(f"cannot read name list {path}: {e}") from None
    if isinstance(obj, dict):
        obj = obj.get("keys", obj.get("names"))
    if not isinstance(obj, (list, tuple)):
        raise SourceError(f"{path}: expected a pickled list of names, got {type(obj).__name__}")
    out = []
    for x in obj:
        if isinstance(x, (tuple, list)) and x:  # (name, score) pairs
            x = x[0]
        out.append(x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else str(x))
    return out
