"""DataLoader workers stay quiet when the trainer stops on Ctrl-C (the trainer reports it, in one line).

Ctrl-C in a terminal sends SIGINT to the whole foreground process group, workers included: each
would print its own KeyboardInterrupt traceback. Workers ignore SIGINT instead; the trainer shuts
them down as it unwinds (and they exit by themselves once it is gone). A worker may also be handing
a batch's shared-memory descriptor to the trainer at that moment: multiprocessing's resource-sharer
thread then sees the connection reset and would print that traceback; a peer that went away is
expected here and is silenced, anything else still goes to the default hook.
"""

from __future__ import annotations

import signal
import sys
import threading

__all__ = ["quiet_worker_interrupts"]


def quiet_worker_interrupts() -> None:
    """Call first thing in a DataLoader `worker_init_fn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # multiprocessing's resource sharer reports its thread's errors through sys.excepthook.
    default_sys, default_thread = sys.excepthook, threading.excepthook

    def sys_hook(exc_type, exc, tb) -> None:
        if not issubclass(exc_type, _PEER_GONE):
            default_sys(exc_type, exc, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if not issubclass(args.exc_type, _PEER_GONE):
            default_thread(args)

    sys.excepthook, threading.excepthook = sys_hook, thread_hook


# The trainer closed its end: it is stopping and says why itself.
_PEER_GONE = (ConnectionError, EOFError)
