"""One writer per run folder: an exclusive POSIX lock on `<run dir>/.lock`, held while the run lives.

The kernel drops the lock when the holder dies, however it dies (SIGKILL, OOM, node reboot for a
local disk), so there is never a stale lock to clean up by hand. The holder writes who it is (pid,
host, Slurm job id, start time) into the file, and a second process that finds it locked exits with
one line naming the holder.

Why a POSIX record lock (`lockf`, F_SETLK) and not `flock`: a `flock` belongs to the open file
description, which forked children (DataLoader workers, pack pools) share, so after a SIGKILL of the
trainer its orphaned workers kept the folder locked for seconds and the immediate rerun was refused.
A POSIX lock belongs to the process alone and is not inherited by `fork`. Its one trap, that closing
*any* descriptor of the file in the holder drops the lock (and that the holder itself may lock again),
is avoided by a registry of the folders this process holds: a second `acquire` in the same process is
refused before it opens the file.
POSIX locks are also what NFS (lockd / NFSv4) and Lustre (`-o flock` or `localflock`) implement.

Filesystems without working locks (NFS mounted with `nolock` fails with ENOLCK on some kernels;
`lockd` down gives ENOLCK too): the run warns that the folder is not protected and goes on,
because refusing would stop every run on such clusters while two writers on one folder is a rare
user mistake. (With `nolock` the kernel may lock locally only: writers on one node are excluded,
writers on other nodes are not.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from personvit.runlog import get_logger

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError"]

LOCK_NAME = ".lock"

log = get_logger(__name__)

# (st_dev, st_ino) of the lock files this process holds: POSIX locks never conflict within a process.
_HELD: set[tuple[int, int]] = set()

# Lock errors that mean "this filesystem cannot lock", not "someone holds it".
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLockedError(RuntimeError):
    """Another process holds the run folder; the message names it."""


class RunLock:
    """The exclusive lock of one run folder.

    Args:
        run_dir: the run folder (created if missing).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._previous = b""
        self.enforced = False

    def acquire(self) -> None:
        """Take the lock without waiting and record this process as the holder.

        The previous holder's record is kept in memory: `restore` puts it back when this process
        turns out to have nothing to do in the folder (a refused resume leaves no byte changed).

        Raises:
            RunLockedError: another live process holds it.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and _identity(self.path) in _HELD:
            raise RunLockedError(f"{self.run_dir} is in use by this process (pid {os.getpid()}); one process "
                                 "(job) writes a run folder at a time")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # F_SETLK reports a held lock as EAGAIN or EACCES
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is in use by {holder}; one process (job) writes a run folder at a "
                "time: wait for it to end, or set another run.dir"
            ) from None
        except OSError as e:
            if e.errno not in _NO_LOCKING:
                os.close(fd)
                raise
            log.warning("cannot lock %s (%s): this filesystem has no lock support, so nothing stops a "
                        "second run from writing the same folder", self.path, e.strerror)
        else:
            self.enforced = True
        self._fd = fd
        _HELD.add(_identity(self.path))
        self._previous = os.pread(fd, 1 << 16, 0)
        self._write(self._holder_record())

    def restore(self) -> None:
        """Put back the previous holder's record (before `release`, when this run did nothing)."""
        if self._fd is not None:
            self._write(self._previous)

    def _write(self, data: bytes) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    @staticmethod
    def _holder_record() -> bytes:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": _slurm_job_id(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}
        return (json.dumps(info) + "\n").encode()

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        if self._fd is not None:
            _HELD.discard(_identity(self.path))
            os.close(self._fd)
            self._fd = None
            self.enforced = False


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _slurm_job_id() -> str | None:
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
    except ValueError:
        return "another process (it has not recorded itself yet)"
    where = f"pid {info.get('pid')} on {info.get('host')}"
    if info.get("slurm_job_id"):
        where += f" (Slurm job {info['slurm_job_id']})"
    return where + f", since {info.get('since')}"
