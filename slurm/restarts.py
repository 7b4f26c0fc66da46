"""The restart log of a run: `<run dir>/restarts.jsonl`, one JSON line per job event.

Events: `start` (with Slurm's restart count), `stop` (a warning signal led to a collective save;
with the reason, `preempted` or `timed-out`, and the step), `requeue`, `end` (completed / failed /
requeue refused). Each line is appended with O_APPEND in one write, so a kill cannot interleave two.
`restart_history` explains every restart: a `start` not preceded by a `stop` means the previous
attempt died without warning (`scontrol requeue`, node failure, SIGKILL).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILENAME = "restarts.jsonl"


def record(run_dir: str | Path, event: str, **fields: Any) -> None:
    """Append one event line (main rank only: callers check).

    Args:
        run_dir: the run folder (created if needed).
        event: `start`, `stop`, `requeue` or `end`.
        fields: JSON-serialisable details.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    row = {"event": event, "time": time.time(), "host": socket.gethostname(),
           "job_id": os.environ.get("SLURM_JOB_ID"),
           "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0), **fields}
    line = (json.dumps(row) + "\n").encode()
    fd = os.open(run_dir / FILENAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """All events of a run, oldest first; a line cut by a kill is skipped."""
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class Restart:
    """One restart of a run and why it happened."""

    attempt: int  # 1 = first restart
    reason: str
    step: int | None  # the step saved before the stop, when known


def restart_history(events: list[dict[str, Any]]) -> list[Restart]:
    """Why each attempt after the first one started."""
    out: list[Restart] = []
    starts = 0
    pending: dict[str, Any] | None = None
    for ev in events:
        kind = ev.get("event")
        if kind == "start":
            starts += 1
            if starts > 1:
                if pending is not None:
                    out.append(Restart(len(out) + 1, str(pending.get("reason", "stopped")), pending.get("step")))
                else:
                    out.append(Restart(len(out) + 1, "killed without warning (scontrol requeue, node failure or "
                                                     "SIGKILL); resumed from the last periodic checkpoint", None))
            pending = None
        elif kind == "stop":
            pending = ev
    return out
