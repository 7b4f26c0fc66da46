"""Preemption, time limits, external requeues and cancellation on the real local Slurm.

The job is tests/slurm/counter_job.py: a stand-in trainer with the trainers' contract (resume from
`latest`, `stop_requested()` every step, collective save + `Preempted`). Its final checkpoint must be
bitwise equal to an uninterrupted run's however often it is interrupted.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from submitit.core.utils import UncompletedJobError

from personvit.checkpoint import compare_checkpoints, load_checkpoint, resolve_checkpoint_path
from slurm.restarts import read_events, restart_history
from slurm.status import run_status
from slurm.submit import submit_training
from tests.slurm import counter_job
from tests.slurm.helpers import last_step, starts, task_pids, wait_done, wait_for

ENTRY = "tests.slurm.counter_job:main"
pytestmark = pytest.mark.slurm


@pytest.fixture
def reference(tmp_path, counter_recipe):
    """The uninterrupted run, in-process: what every interrupted run must end equal to."""
    def run(steps: int) -> Path:
        run_dir = tmp_path / f"reference-{steps}"
        assert counter_job.main([str(counter_recipe), f"steps={steps}", "sleep_s=0", f"run.dir={run_dir}"]) == 0
        return run_dir
    return run


def _submit(tmp_path, recipe, *overrides):
    sub = submit_training("pretrain", str(recipe), [f"cluster.runs_root={tmp_path / 'runs'}", *overrides],
                          "localhost_slurm", entry=ENTRY)
    return sub.jobs[0], sub.run_dirs()[0]


def _model_equal(a: Path, b: Path) -> None:
    pa, pb = load_checkpoint(resolve_checkpoint_path(a)), load_checkpoint(resolve_checkpoint_path(b))
    assert pa["step"] == pb["step"]
    assert torch.equal(pa["state"]["model"].view(torch.int64), pb["state"]["model"].view(torch.int64))


def test_job_completes_and_status_reports_it(slurm, tmp_path, counter_recipe, reference, capsys):
    job, run_dir = _submit(tmp_path, counter_recipe, "steps=10", "sleep_s=0")
    assert run_dir.name == f"pretrain-{job.job_id}"  # the job id names the run folder
    assert job.result()["run_dir"] == str(run_dir)
    assert compare_checkpoints(run_dir, reference(10)) is None
    # The result is written a moment before the job step ends: give Slurm time to notice.
    st = wait_for("Slurm state COMPLETED", lambda: (s := run_status(run_dir)).state == "COMPLETED" and s, 30)
    assert st.state_source in ("sacct", "squeue")
    assert st.checkpoint["step"] == 10 and st.restarts == [] and st.last_metrics["step"] == 10
    assert (run_dir / f"{job.job_id}_0_log.out").exists()  # logs live in the run folder


def test_submitit_preemption_saves_collectively_and_resumes(slurm, tmp_path, counter_recipe, reference):
    job, run_dir = _submit(tmp_path, counter_recipe, "steps=80", "every_steps=0")
    wait_for("a few steps", lambda: last_step(run_dir) >= 5)
    job._interrupt(timeout=False)  # submitit's own preemption: SIGTERM then USR2
    job.result()
    events = read_events(run_dir)
    stops = [e for e in events if e["event"] == "stop"]
    assert len(stops) == 1 and stops[0]["reason"] == "preempted" and stops[0]["signal"] == "SIGUSR2"
    # every_steps=0: the only checkpoint before the end is the one saved on the signal.
    assert [r.reason for r in restart_history(events)] == ["preempted"]
    assert restart_history(events)[0].step == stops[0]["step"] > 0
    assert compare_checkpoints(run_dir, reference(80)) is None


def test_submitit_timeout_two_ranks_agree_and_resume(slurm, tmp_path, counter_recipe, reference):
    # timeout_min <= 10: submitit counts the interrupt as a time-out (one of max_requeues).
    job, run_dir = _submit(tmp_path, counter_recipe, "steps=80", "every_steps=0", "cluster.tasks_per_node=2",
                           "cluster.timeout_min=5")
    wait_for("a few steps", lambda: last_step(run_dir) >= 5)
    job._interrupt(timeout=True)
    assert job.results()[0]["run_dir"] == str(run_dir)  # one result per rank
    events = read_events(run_dir)
    assert [r.reason for r in restart_history(events)] == ["timed-out"]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["world"] for r in rows} == {2} and {r["ranks_sum"] for r in rows} == {3.0}  # 2 real ranks
    _model_equal(run_dir, reference(80))


def test_signal_on_one_rank_stops_both_at_the_same_step(slurm, tmp_path, counter_recipe, reference):
    job, run_dir = _submit(tmp_path, counter_recipe, "steps=80", "every_steps=0", "cluster.tasks_per_node=2")
    wait_for("a few steps", lambda: last_step(run_dir) >= 5)
    rank1 = wait_for("rank 1 process", lambda: task_pids(job.job_id).get(1))
    os.kill(rank1, signal.SIGUSR2)  # only rank 1 is warned; rank 0 must learn it from the all-reduce
    job.results()
    stops = [e for e in read_events(run_dir) if e["event"] == "stop"]
    assert len(stops) == 1 and "another rank" in stops[0]["signal"]  # recorded by rank 0
    _model_equal(run_dir, reference(80))


def test_cancelled_job_is_reported_cancelled_not_hung(slurm, tmp_path, counter_recipe, capsys):
    job, run_dir = _submit(tmp_path, counter_recipe, "steps=1000")
    wait_for("a few steps", lambda: last_step(run_dir) >= 3)
    slurm.run("scancel", job.job_id)
    wait_done(job, timeout=60)
    with pytest.raises(UncompletedJobError):
        job.result()
    st = wait_for("Slurm state CANCELLED", lambda: (s := run_status(run_dir)).state == "CANCELLED" and s, 30)
    assert st.state_source == "sacct"
    from slurm.status import main as status_main

    assert status_main([str(run_dir)]) == 0
    assert "CANCELLED" in capsys.readouterr().out


def test_requeue_budget_is_enforced_and_logged(slurm, tmp_path, counter_recipe):
    job, run_dir = _submit(tmp_path, counter_recipe, "steps=200", "every_steps=0", "cluster.max_requeues=1")
    for attempt in (1, 2):
        wait_for(f"attempt {attempt}", lambda a=attempt: starts(run_dir) == a and last_step(run_dir) >= 3)
        job._interrupt(timeout=False)
    wait_done(job, timeout=90)
    with pytest.raises(UncompletedJobError, match="max_requeues=1"):
        job.result()
    end = [e for e in read_events(run_dir) if e["event"] == "end"]
    assert end and end[-1]["status"] == "requeue refused"
