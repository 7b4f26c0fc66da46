"""Finding and ending the processes of one local cluster, by PID only (never by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MARKER_ENV = "PERSONVIT_LOCAL_SLURM"  # set on every daemon we start: how leftovers are recognised


def alive(pid: int | None) -> bool:
    """True while `pid` runs (a zombie counts as dead)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def terminate(pid: int | None, grace_s: float = 8.0) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL."""
    if not alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and alive(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def leftover_pids(root: str | Path) -> list[int]:
    """PIDs of processes started by (or for) the cluster in `root`: daemons, slurmstepd, job tasks.

    Matched by `SLURM_CONF=<root>/slurm.conf` or the marker variable in /proc/PID/environ; /proc
    shows the processes of every network namespace, so node namespaces need no special case.
    """
    needles = (f"SLURM_CONF={Path(root) / 'slurm.conf'}".encode(), f"{MARKER_ENV}={root}".encode())
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(n in environ for n in needles):
            out.append(int(entry.name))
    return out


def listening(pid: int, port: int) -> bool:
    """True when a TCP socket in the network namespace of `pid` listens on `port`.

    Reads /proc/PID/net/tcp{,6}, which describe the namespace the process lives in: a readiness
    check that works inside a node namespace the caller cannot route to, and sends no traffic.
    """
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def tail(path: Path, n: int = 3) -> str:
    """The last `n` lines of a log, joined on one line (for error messages)."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "(no log)"
