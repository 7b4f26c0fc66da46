"""Preemption and time-limit warnings: a signal sets a flag, all ranks agree, trainers save and stop.

Slurm sends a warning signal (`--signal=USR2@<delay>`, what submitit writes in the sbatch header)
some seconds before it kills a job that is preempted or hits its time limit. Saving from inside the
signal handler would race the training step and the other ranks, so the handler only sets a flag.
Trainers call `stop_requested()` once per step; it all-reduces the flag (max) when a process group
exists, so every rank sees True at the same step even if the signal reached only some of them. They
then save a checkpoint together and raise `Preempted`; the job wrapper (slurm/jobs.py) catches it and
requeues the job, which resumes from `latest`.

submitit installs its own USR2 handler (it calls the callable's `checkpoint()`, requeues and exits
at once). `install_handlers` takes its place and keeps it: `chained_handler(sig)` hands it back to
the job wrapper, which calls it only after the collective save, so submitit's requeue bookkeeping
(timeout vs preemption, requeue budget) still applies.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import torch

from personvit.distributed import all_reduce_max_, is_dist
from personvit.runlog import get_logger

log = get_logger(__name__)

_flag = threading.Event()
_reason: dict[str, Any] = {}
_previous: dict[int, Any] = {}


class Preempted(Exception):
    """Raised by a trainer after it saved a checkpoint because a stop was requested.

    Args:
        step: the step of the checkpoint that was saved.
        reason: what asked for the stop (signal name, or `request_stop`'s reason).
    """

    def __init__(self, step: int = -1, reason: str = ""):
        super().__init__(f"stopped for preemption at step {step}" + (f" ({reason})" if reason else ""))
        self.step = step
        self.reason = reason


def _handler(signum: int, frame: FrameType | None) -> None:
    # Only set the flag: anything heavier here would run in the middle of a training step.
    if not _flag.is_set():
        _reason.update(signal=signal.Signals(signum).name, time=time.time())
        _flag.set()


def install_handlers(signals: Iterable[int | signal.Signals] = (signal.SIGUSR2,)) -> None:
    """Make the given signals set the stop flag. Idempotent; main thread only.

    Args:
        signals: the warning signals (Slurm/submitit's USR2 by default). The handler previously
            installed for each (submitit's, typically) is kept for `chained_handler`.
    """
    for sig in signals:
        sig = signal.Signals(sig)
        current = signal.getsignal(sig)
        if current is _handler:
            continue
        _previous[int(sig)] = current
        signal.signal(sig, _handler)


def chained_handler(sig: int | signal.Signals = signal.SIGUSR2) -> Callable[[int, FrameType | None], Any] | None:
    """The Python handler `install_handlers` displaced for `sig` (None if it was default/ignored)."""
    prev = _previous.get(int(sig))
    return prev if callable(prev) else None


def request_stop(reason: str = "requested") -> None:
    """Set the stop flag from code (tests, a watchdog thread)."""
    if not _flag.is_set():
        _reason.update(signal=reason, time=time.time())
        _flag.set()


def local_stop_requested() -> bool:
    """This process's flag only (no communication)."""
    return _flag.is_set()


def stop_reason() -> str:
    """What set the flag (`SIGUSR2`, a `request_stop` reason), or '' when nothing did."""
    return str(_reason.get("signal", ""))


def stop_requested() -> bool:
    """Whether any rank got a stop request; collective when a process group exists.

    Every rank must call it at the same point of every step (it is an all-reduce), so all of them
    take the same branch and save the same checkpoint.
    """
    if not is_dist():
        return _flag.is_set()
    flag = torch.tensor([1 if _flag.is_set() else 0], dtype=torch.int32)
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    all_reduce_max_(flag)
    agreed = bool(flag.item())
    if agreed and not _flag.is_set():
        _reason.setdefault("signal", "another rank")
        _flag.set()
    return agreed


def reset() -> None:
    """Clear the flag (a new run in the same process, tests)."""
    _flag.clear()
    _reason.clear()
