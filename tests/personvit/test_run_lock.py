"""One writer per run folder: a live holder is named and refused, a SIGKILLed one leaves no stale lock."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from personvit.run_lock import LOCK_NAME, RunLock, RunLockedError

HOLD = textwrap.dedent("""
    import sys, time
    from personvit.run_lock import RunLock
    lock = RunLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _holder(run_dir: Path, job_id: str = "4242") -> subprocess.Popen:
    env = {**os.environ, "SLURM_JOB_ID": job_id}
    env.pop("SLURM_ARRAY_JOB_ID", None)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path):
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        with pytest.raises(RunLockedError) as info:
            RunLock(run_dir).acquire()
        msg = str(info.value)
        assert f"pid {holder.pid} on {socket.gethostname()} (Slurm job 4242)" in msg
        assert "\n" not in msg
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(run_dir)
    lock.acquire()  # the kernel dropped the dead holder's lock: nothing to clean by hand
    try:
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_restore_puts_back_the_previous_record(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    record = (tmp_path / LOCK_NAME).read_bytes()
    first.release()
    again = RunLock(tmp_path)
    again.acquire()
    again.restore()
    again.release()
    assert (tmp_path / LOCK_NAME).read_bytes() == record


def test_release_lets_the_same_process_lock_again(tmp_path):
    a = RunLock(tmp_path)
    a.acquire()
    with pytest.raises(RunLockedError):  # a second holder in the same process is refused too
        RunLock(tmp_path).acquire()
    a.release()
    b = RunLock(tmp_path)
    b.acquire()
    b.release()


HOLD_WITH_CHILD = textwrap.dedent("""
    import os, sys, time
    from personvit.run_lock import RunLock
    lock = RunLock(sys.argv[1])
    lock.acquire()
    child = os.fork()  # like a DataLoader worker: it outlives a SIGKILLed parent for a while
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(120)
""")


def test_forked_child_of_a_killed_holder_does_not_keep_the_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_WITH_CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    child = int(proc.stdout.readline())
    try:
        with pytest.raises(RunLockedError):
            RunLock(tmp_path).acquire()
        proc.kill()
        proc.wait(timeout=30)
        os.kill(child, 0)  # the child is still alive: only the holder's death may free the folder
        lock = RunLock(tmp_path)
        lock.acquire()
        lock.release()
    finally:
        proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
