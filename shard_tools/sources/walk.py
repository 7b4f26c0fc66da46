"""The files under a folder in sorted order, in memory that does not grow with their number.

Sorting makes a listing, hence the shards, independent of the file system's order. The order is
that of `sorted()` over the full relative paths as str, which is not a depth-first walk with sorted
entries ('a-b/x' < 'a/x' because '-' < '/'). An external merge sort gives exactly that order: paths
are sorted in runs of RUN, runs beyond the first go to a temporary file, and the runs are merged
while being read back. A flat folder of 4M files therefore never holds 4M strings at once.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

RUN = 16384  # paths sorted in memory at once (~1.5 MB of str objects)
MERGE_READAHEAD = 1 << 20  # bytes read ahead over all runs together while merging
MIN_BLOCK = 4096  # smallest read per run (one page)


def scan_files(folder: Path) -> Iterator[str]:
    """Regular files under `folder` (recursively, symlinks included), as relative POSIX paths in the
    file system's order. String paths, not pathlib: this runs once per image of a 4M-image tree."""
    stack = [""]
    base = os.fspath(folder)
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(base, rel) if rel else base) as it:
            for e in it:
                if e.name.startswith("."):
                    continue  # editor/OS metadata (.DS_Store, ._x.jpg), never images of the set
                name = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append(name)
                else:
                    yield name


def _write_run(f, paths: list[str]) -> tuple[int, int]:
    """Append `paths`, sorted and NUL-terminated (no path contains NUL), to `f`; returns its byte range."""
    paths.sort()
    start = f.tell()
    f.write(("\0".join(paths) + "\0").encode("utf-8", "surrogateescape"))
    return start, f.tell()


def _read_run(fd: int, start: int, end: int, block: int) -> Iterator[str]:
    """The paths of one run, read `block` bytes at a time and decoded one by one (no list per block)."""
    tail = b""
    while start < end:
        buf = tail + os.pread(fd, min(block, end - start), start)
        start += block
        pos = 0
        while (cut := buf.find(b"\0", pos)) >= 0:  # NUL never occurs inside a UTF-8 sequence
            yield buf[pos:cut].decode("utf-8", "surrogateescape")
            pos = cut + 1
        tail = buf[pos:]


def walk_files(folder: Path) -> Iterator[str]:
    """Regular files under `folder` as relative POSIX paths, in `sorted()` order (see the module doc)."""
    batch: list[str] = []
    runs: list[tuple[int, int]] = []
    f = None  # the runs' temporary file, made only when there is more than one run
    try:
        for name in scan_files(folder):
            batch.append(name)
            if len(batch) == RUN:
                f = f or tempfile.TemporaryFile(prefix="shard-tools-walk-")
                runs.append(_write_run(f, batch))
                batch = []
        if f is None:
            batch.sort()
            yield from batch
            return
        if batch:
            runs.append(_write_run(f, batch))
        del batch
        f.flush()
        block = min(max(MERGE_READAHEAD // len(runs), MIN_BLOCK), 1 << 18)
        yield from heapq.merge(*(_read_run(f.fileno(), a, b, block) for a, b in runs))
    finally:
        if f is not None:
            f.close()
