"""The one way a file of a run folder or a shard set is written: temp name, fsync, rename, fsync the folder.

A reader (or a job SIGKILLed at any instant) sees either the old file or the new one, never half a file
under a final name. Torch-free and stdlib-only, so `shard_tools` (whose `--help` must not import torch)
uses it too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from personvit.write_errors import ErrorRecordingFile, reporting_write_errors

__all__ = ["atomic_write", "fsync_dir", "temp_path"]


def temp_path(final: Path) -> Path:
    """Where `final` is written before the rename: hidden, per host and process (array tasks share folders)."""
    return final.with_name(f".{final.name}.tmp-{os.uname().nodename}-{os.getpid()}")


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], object], *,
                 plain_oserror: bool = False) -> int:
    """Write `data` (bytes, text as UTF-8, or `data(fileobj)`) to `path` atomically; returns the size.

    Args:
        path: the final name; its folder is created when missing.
        data: the content, or a function that writes it into a binary file object (e.g. torch.save).
        plain_oserror: raise an OSError whose filename is `path` instead of a WriteFailedError (for
            `shard_tools`, whose callers handle OSError).
    Raises:
        WriteFailedError: the disk is full, over quota or failing; the temp file is removed and whatever
            `path` held before is untouched.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with _naming_errors(path, plain_oserror):
            path.parent.mkdir(parents=True, exist_ok=True)
            raw = open(tmp, "wb")
            f = ErrorRecordingFile(raw)
            try:
                if callable(data):
                    data(f)
                else:
                    f.write(data.encode() if isinstance(data, str) else data)
                raw.flush()  # ENOSPC and EIO often surface only here, or in fsync
                os.fsync(raw.fileno())
                size = raw.tell()
            except BaseException as e:
                with contextlib.suppress(OSError):  # closing flushes again: a second ENOSPC
                    raw.close()
                if f.error is not None and f.error is not e:
                    raise f.error from None  # torch.save's zip writer hides the cause behind its own
                raise
            raw.close()
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return size


@contextlib.contextmanager
def _naming_errors(path: Path, plain_oserror: bool) -> Iterator[None]:
    """An OSError inside the block names `path` (write() and fsync() do not name the file)."""
    if not plain_oserror:
        with reporting_write_errors(path):
            yield
        return
    try:
        yield
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
