"""Failed writes into a run folder (full disk, quota, I/O error) as one error that names the file.

torch.save reports a full disk as `enforce fail at inline_container.cc ... unexpected pos`, after the
OSError that caused it was swallowed inside the zip writer; `ErrorRecordingFile` keeps that OSError so
the user reads `cannot write PATH: No space left on device` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["ErrorRecordingFile", "WriteFailedError", "reporting_write_errors"]


class WriteFailedError(RuntimeError):
    """A file of the run folder could not be written; the message says which and why.

    Args:
        path: the file that was being written (its final name, not the temporary one).
        cause: the OSError (ENOSPC, EDQUOT, EIO, ...).
    Attributes:
        last_checkpoint: filled in by whoever knows the run folder: what a rerun resumes from.
    """

    def __init__(self, path: str | Path, cause: OSError):
        self.path, self.cause = Path(path), cause
        self.last_checkpoint: str | None = None
        self.checkpoint_known = False
        super().__init__()

    def __str__(self) -> str:
        reason = self.cause.strerror or type(self.cause).__name__
        msg = f"cannot write {self.path}: {reason}"
        if self.checkpoint_known:
            msg += f"; last complete checkpoint: {self.last_checkpoint or 'none'}"
        return msg


@contextlib.contextmanager
def reporting_write_errors(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised inside the block into a `WriteFailedError` naming `path`."""
    try:
        yield
    except OSError as e:
        raise WriteFailedError(path, e) from None


class ErrorRecordingFile:
    """A binary file wrapper that remembers the first exception of `write` before re-raising it.

    torch.save's C++ writer turns whatever `write` raised (an OSError, a KeyboardInterrupt that
    landed there) into its own RuntimeError; the caller re-raises the recorded one instead.

    Args:
        f: the open file.
    """

    def __init__(self, f: BinaryIO):
        self._f = f
        self.error: BaseException | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except BaseException as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> Any:  # flush, tell, seek, fileno: the real file's
        return getattr(self._f, name)
