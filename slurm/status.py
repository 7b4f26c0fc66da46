"""`personvit-submit status [RUN_DIR ...]`: what became of each run, also after it left the queue.

Per run: the Slurm state (squeue while queued or running, else the accounting record from sacct,
else the run's own `restarts.jsonl` end event when the cluster keeps no accounting), restarts and
why, the latest complete checkpoint (step, epoch, time) and the last metrics line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from personvit.checkpoint import CheckpointManager
from slurm.restarts import read_events, restart_history


@dataclass
class RunStatus:
    """Everything `status` reports about one run folder."""

    run_dir: str
    job_id: str | None
    state: str
    state_source: str  # squeue | sacct | run log | none
    restarts: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    last_metrics: dict[str, Any] | None = None


def _query(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def slurm_state(job_id: str) -> tuple[str, str] | None:
    """(state, source) from squeue, then sacct; None when neither knows the job.

    For an array's base id, the states of its tasks are summarised (`COMPLETED x2, RUNNING x1`).
    """
    out = _query(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if out:
        return _summarise(out.split()), "squeue"
    out = _query(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State"])
    if out:
        states: dict[str, str] = {}
        for line in out.splitlines():
            jid, _, state = line.partition("|")
            states[jid] = state.split()[0] if state else "UNKNOWN"  # `CANCELLED by 0` -> CANCELLED
        return _summarise(list(states.values())), "sacct"
    return None


def _summarise(states: list[str]) -> str:
    if len(set(states)) == 1:
        return states[0]
    counts: dict[str, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{s} x{n}" for s, n in sorted(counts.items()))


def _last_line(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
    return None


def latest_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """{file, step, epoch, time} of the newest complete checkpoint, or None."""
    manager = CheckpointManager(run_dir / "checkpoints", is_main=False)
    path = manager.latest()
    if path is None:
        return None
    marker = json.loads(path.with_suffix(".commit").read_text())
    return {"file": str(path), "step": marker.get("step"), "epoch": marker.get("epoch"), "time": marker.get("time")}


def run_status(run_dir: str | Path) -> RunStatus:
    """Collect the status of one run folder."""
    run_dir = Path(run_dir)
    sub_file = run_dir / "submission.json"
    submission = json.loads(sub_file.read_text()) if sub_file.is_file() else {}
    job_id = submission.get("job_id")
    events = read_events(run_dir)
    found = slurm_state(str(job_id)) if job_id and submission.get("executor", "slurm") == "slurm" else None
    if found is not None:
        state, source = found
    else:
        ends = [e for e in events if e.get("event") == "end"]
        starts = [e for e in events if e.get("event") == "start"]
        if ends and (not starts or ends[-1]["time"] >= starts[-1]["time"]):
            state, source = ends[-1].get("status", "ended").upper(), "run log"
        elif starts:
            state, source = "STARTED (no end recorded; the job may be running or was killed)", "run log"
        else:
            state, source = ("SUBMITTED (unknown to the scheduler now)" if job_id else "UNKNOWN"), "none"
    return RunStatus(run_dir=str(run_dir), job_id=job_id, state=state, state_source=source,
                     restarts=[asdict(r) for r in restart_history(events)],
                     checkpoint=latest_checkpoint(run_dir), last_metrics=_last_line(run_dir / "metrics.jsonl"))


def format_status(st: RunStatus) -> str:
    """A few human-readable lines for one run."""
    lines = [f"{st.run_dir}  job {st.job_id or '-'}  {st.state}  [{st.state_source}]"]
    lines.append(f"  restarts: {len(st.restarts)}")
    for r in st.restarts:
        at = f" (saved at step {r['step']})" if r.get("step") is not None else ""
        lines.append(f"    #{r['attempt']}: {r['reason']}{at}")
    if st.checkpoint:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.checkpoint["time"])) if st.checkpoint["time"] else "?"
        lines.append(f"  checkpoint: {Path(st.checkpoint['file']).name} step {st.checkpoint['step']} "
                     f"epoch {st.checkpoint['epoch']} ({when})")
    else:
        lines.append("  checkpoint: none")
    lines.append(f"  metrics: {json.dumps(st.last_metrics) if st.last_metrics else 'none'}")
    return "\n".join(lines)


RUN_FOLDER_MARKS = ("submission.json", "config.yaml", "metrics.jsonl", "restarts.jsonl", "checkpoints")


def is_run_folder(path: Path) -> bool:
    """Whether `path` holds any trace of a run (its submission record, config, metrics or checkpoints)."""
    return any((path / mark).exists() for mark in RUN_FOLDER_MARKS)


def find_runs(root: Path = Path("runs")) -> list[Path]:
    """Run folders under `root` (those with a submission record)."""
    return sorted(p.parent for p in root.glob("**/submission.json"))


def main(run_dirs: list[str], as_json: bool = False, out=None) -> int:
    """Print the status of the given runs (default: every run under ./runs). 1 if one is missing."""
    out = out or sys.stdout
    dirs = [Path(d) for d in run_dirs] or find_runs()
    if not dirs:
        print("no runs found (give run folders, or run from the folder that holds runs/)", file=out)
        return 1
    status = 0
    reports = []
    for d in dirs:
        if not d.is_dir():
            print(f"{d}: no such run folder", file=sys.stderr)
            status = 1
            continue
        if not is_run_folder(d):
            print(f"{d}: not a run folder (none of {', '.join(RUN_FOLDER_MARKS)})", file=sys.stderr)
            status = 1
            continue
        reports.append(run_status(d))
    if not reports:
        return status
    if as_json:
        print(json.dumps([asdict(r) for r in reports], indent=1), file=out)
    else:
        print("\n".join(format_status(r) for r in reports), file=out)
    return status
