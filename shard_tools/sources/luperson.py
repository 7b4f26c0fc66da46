"""LUPerson (unlabeled, ~4.18M crops): a folder tree of JPEGs or the released LMDB.

Folder: `SRC/images/**` (or `SRC/**` when there is no `images/`); every regular file is a
candidate and non-JPEG content is skipped at packing time with its reason.
LMDB: a folder holding `data.mdb` (SRC itself or `SRC/lmdb`), values are JPEG bytes; the key list
comes from `keys.pkl` next to it when present (the release order), else from a cursor scan.
"""

from __future__ import annotations

import os
from pathlib import Path

from shard_tools.sources.base import FolderReader, Listing, SourceError, load_name_list, walk_files
from shard_tools.sources.table import TableBuilder


class LUPersonFolder(FolderReader):
    """LUPerson as JPEG files; record paths are relative to SRC."""

    name = "luperson"

    def __init__(self, src: str | Path):
        src = Path(src)
        if not src.is_dir():
            raise SourceError(f"luperson: source folder {src} does not exist")
        self.root = src
        self.images = src / "images" if (src / "images").is_dir() else src

    def list(self) -> Listing:
        prefix = self.images.relative_to(self.root).as_posix()
        table = TableBuilder(labeled=False)
        for p in walk_files(self.images):
            table.add("train", p if prefix == "." else f"{prefix}/{p}")
        if not len(table):
            raise SourceError(f"luperson: expected JPEG files under {self.images}, found none")
        return Listing(table.build(), distinct=True)


class LUPersonLMDB:
    """LUPerson as the released LMDB; record paths are the LMDB keys.

    The environment is opened lazily per process: an LMDB handle must not cross a fork.
    """

    name = "luperson"

    def __init__(self, src: str | Path):
        src = Path(src)
        self.root = src if (src / "data.mdb").is_file() else src / "lmdb"
        if not (self.root / "data.mdb").is_file():
            raise SourceError(f"luperson: expected an LMDB folder with data.mdb at {src} or {src / 'lmdb'}")
        try:
            import lmdb  # noqa: F401  (optional dependency)
        except ImportError:
            raise SourceError("luperson: reading the LMDB needs the `lmdb` package (pip install lmdb)") from None
        keys = [p / "keys.pkl" for p in (self.root, src) if (p / "keys.pkl").is_file()]
        self.keys_file = keys[0] if keys else None
        self._env = None
        self._pid = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_env": None, "_pid": None}  # workers open their own handle

    def _txn(self):
        import lmdb

        if self._env is None or self._pid != os.getpid():
            self._env = lmdb.open(str(self.root), readonly=True, lock=False, readahead=False, meminit=False,
                                  max_readers=512)
            self._pid = os.getpid()
        return self._env.begin(buffers=False)

    def list(self) -> Listing:
        table = TableBuilder(labeled=False)
        if self.keys_file is not None:
            for k in load_name_list(self.keys_file):  # the pickle itself is one str per key while it loads
                table.add("train", k)
        else:
            with self._txn() as txn:  # streamed: keys come sorted and distinct
                for k in txn.cursor().iternext(keys=True, values=False):
                    table.add("train", k.decode("utf-8", "surrogateescape"))
        if not len(table):
            raise SourceError(f"luperson: the LMDB at {self.root} holds no keys")
        return Listing(table.build(), distinct=self.keys_file is None)

    def read(self, path: str) -> bytes:
        with self._txn() as txn:
            value = txn.get(path.encode("utf-8", "surrogateescape"))
        if value is None:
            raise FileNotFoundError(f"key {path!r} not in the LMDB")
        return bytes(value)


def luperson(src: str | Path) -> LUPersonFolder | LUPersonLMDB:
    """The LUPerson source at `src`: LMDB when `data.mdb` is there (or in `src/lmdb`), else JPEG files."""
    src = Path(src)
    if (src / "data.mdb").is_file() or (src / "lmdb" / "data.mdb").is_file():
        return LUPersonLMDB(src)
    return LUPersonFolder(src)
