"""Sample keys, and exact duplicate / key-collision checks over millions of rows at 8 bytes a row.

A set of 4M key strings would cost ~0.4 GB; their 64-bit hashes in a numpy array cost 32 MB and
are sorted in place, so nothing else of that size is alive meanwhile. Only when some hash repeats
does a second pass hash the rows again to find those rows, and compares them by their real strings:
the results are exact, and the second pass costs nothing on sets without repeats (the usual case).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from shard_tools.sources.table import RecordTable

_NOT_KEY_CHAR = re.compile(r"[^A-Za-z0-9_-]")
# the same substitution for ASCII text as one bytes.translate (half the regex's time; runs twice per image)
_ASCII_KEY = bytes(c if chr(c).isalnum() or chr(c) in "_-" else ord("_") for c in range(128)) + b"_" * 128

# What is compared for a row: (table, rows of a batch, their paths) -> one string per row.
RowText = Callable[[RecordTable, np.ndarray, list[str]], Iterable[str]]
# A fresh pass over some rows: () -> (rows, paths) per batch.
Batches = Callable[[], Iterator[tuple[np.ndarray, list[str]]]]


def sample_key(path: str) -> str:
    """A dot-free, slash-free key from a source path: `query/0001_c1s1_001051_00.jpg` -> `query_0001_c1s1_001051_00`."""
    dot, slash = path.rfind("."), path.rfind("/")
    stem = path[:dot] if dot > slash + 1 else path
    if stem.isascii():
        return stem.encode("ascii").translate(_ASCII_KEY).decode("ascii")
    return _NOT_KEY_CHAR.sub("_", stem)


def stable_hash(text: str) -> int:
    """A 64-bit hash equal in every process (Python's `hash` of str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(),
                          "little", signed=True)


def key_text(table: RecordTable, rows: np.ndarray, paths: list[str]) -> Iterable[str]:
    """The rows' derived sample keys."""
    return map(sample_key, paths)


def identity_text(table: RecordTable, rows: np.ndarray, paths: list[str]) -> Iterable[str]:
    """The rows' whole identity (split, path, pid, camid): equal strings mean equal records."""
    pids, cams = table.labels(rows)
    return (f"{c}\0{p}\0{pid}\0{cam}" for c, p, pid, cam in zip(table.split[rows].tolist(), paths, pids, cams))


def sorted_hashes(table: RecordTable, read: Batches, n: int, text: RowText) -> np.ndarray:
    """The int64 `stable_hash` of each of the `n` rows' text, sorted."""
    out = np.empty(n, np.int64)
    s = 0
    for b, paths in read():
        out[s:s + len(b)] = np.fromiter(map(stable_hash, text(table, b, paths)), np.int64, len(b))
        s += len(b)
    out.sort()  # in place: no second array of this size
    return out


def repeats(sorted_hashes: np.ndarray) -> np.ndarray:
    """The values that occur more than once in a sorted array (sorted, each once)."""
    h = sorted_hashes
    return np.unique(h[1:][h[1:] == h[:-1]])


def rows_hashing_to(table: RecordTable, read: Batches, text: RowText, values: np.ndarray) -> Iterator[tuple[int, str]]:
    """(row, text) of the rows whose text hashes to one of `values`, in reading order."""
    for b, paths in read():
        texts = list(text(table, b, paths))
        hit = np.isin(np.fromiter(map(stable_hash, texts), np.int64, len(texts)), values)
        for i in np.flatnonzero(hit).tolist():
            yield int(b[i]), texts[i]


def duplicate_rows(table: RecordTable) -> np.ndarray:
    """The rows (sorted) that repeat an earlier row in every field; the first one stays."""
    known = sorted_hashes(table, table.scan, len(table), identity_text)
    rep = repeats(known)
    del known
    seen: set[str] = set()
    drop: list[int] = []
    for row, ident in rows_hashing_to(table, table.scan, identity_text, rep) if len(rep) else ():
        if ident in seen:
            drop.append(row)
        seen.add(ident)
    return np.array(sorted(drop), np.int64)


def _reader(table: RecordTable, parts: list[np.ndarray]) -> Batches:
    return lambda: (batch for rows in parts for batch in table.paths.batches(rows))


def key_hashes(table: RecordTable, parts: list[np.ndarray]) -> np.ndarray:
    """Sorted hashes of the sample keys of every row in `parts` (pass rows in listing order: the
    paths are then read sequentially)."""
    return sorted_hashes(table, _reader(table, parts), sum(map(len, parts)), key_text)


def resolve_key_collisions(table: RecordTable, ordered: list[np.ndarray], known: np.ndarray) -> dict[int, str]:
    """New keys for the rows whose derived key repeats an earlier one (`a.b/c.jpg` vs `a_b/c.jpg`).

    Args:
        table: the listing.
        ordered: the planned rows in write order (renaming follows it, so it is deterministic).
        known: `key_hashes` of the same rows.

    Returns:
        {row: new key}; a renamed key `base_N` skips every N whose key exists anywhere in the plan.
    """
    rep = repeats(known)
    if not len(rep):
        return {}

    def exists(key: str) -> bool:
        h = stable_hash(key)
        i = int(np.searchsorted(known, h))
        return i < len(known) and known[i] == h

    renamed: dict[int, str] = {}
    used: set[str] = set()
    for row, base in rows_hashing_to(table, _reader(table, ordered), key_text, rep):
        key, n = base, 0
        while key in used or (key != base and exists(key)):
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        if key != base:
            renamed[row] = key
    return renamed
