"""Small helpers shared by the Slurm tests (waiting on files a running job writes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from personvit.checkpoint import load_checkpoint, resolve_checkpoint_path
from slurm.restarts import read_events
from tests.support.waiting import wait_for

__all__ = ["wait_for"]  # re-exported: the Slurm tests import it from here


def unavailable(reason: str) -> None:
    """Skip with the reason why Slurm (or namespaces) cannot run here; under CI=true, fail instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"local Slurm unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"local Slurm unavailable: {reason}")


def last_step(run_dir: Path) -> int:
    """Step of the last metrics line (0 when none yet)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    for line in reversed(path.read_text().splitlines()):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def checkpoint_step(run_dir: Path) -> int:
    """Step of the run's latest complete checkpoint (-1 when none yet)."""
    try:
        return load_checkpoint(resolve_checkpoint_path(run_dir))["step"]
    except Exception:  # noqa: BLE001 - none yet, or one being written
        return -1


def starts(run_dir: Path) -> int:
    return sum(1 for e in read_events(run_dir) if e["event"] == "start")


def wait_done(job, timeout: float = 120.0) -> None:
    """Wait until submitit considers the job finished (result written or a final Slurm state)."""
    wait_for(f"job {job.job_id} to finish", lambda: job.done(force_check=True), timeout, every=1.0)


def task_pids(job_id: str) -> dict[int, int]:
    """{rank: pid} of the job's python tasks (submitit's `_submit` processes, not srun), via /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(kv.split(b"=", 1) for kv in (entry / "environ").read_bytes().split(b"\0") if b"=" in kv)
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (env.get(b"SLURM_JOB_ID") == job_id.encode() and b"submitit.core._submit" in argv
                and not argv[0].endswith(b"srun")):
            out[int(env.get(b"SLURM_PROCID", b"0"))] = int(entry.name)
    return out
