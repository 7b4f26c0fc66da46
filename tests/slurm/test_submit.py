"""Submission on the local Slurm: failures before and at sbatch, code snapshots, the CLI end to end."""

from __future__ import annotations

import pytest

from personvit.config.core import ConfigError
from slurm.launch import SubmissionError
from slurm.restarts import read_events
from slurm.submit import main as submit_main
from slurm.submit import submit_training

ENTRY = "tests.slurm.counter_job:main"
pytestmark = pytest.mark.slurm


def test_unknown_partition_fails_before_submission(slurm, tmp_path, counter_recipe):
    def jobs_known() -> int:
        return len(slurm.run("sacct", "-n", "-X", "-P", "-o", "JobID", "-S", "2000-01-01").stdout.split())

    before = jobs_known()
    with pytest.raises(ConfigError, match="partition 'gpu' does not exist on this cluster.*debug"):
        submit_training("pretrain", str(counter_recipe), [f"cluster.runs_root={tmp_path}", "cluster.partition=gpu"],
                        "localhost_slurm", entry=ENTRY)
    assert jobs_known() == before  # nothing reached the scheduler
    assert not list(tmp_path.glob("pretrain-*"))


def test_sbatch_refusal_is_shown_verbatim_with_the_command(slurm, tmp_path, counter_recipe, capsys):
    # The profile allows 2 nodes but the cluster has one: only sbatch can tell.
    status = submit_main(["pretrain", str(counter_recipe), "--cluster", "localhost_slurm", "--entry", ENTRY,
                          f"cluster.runs_root={tmp_path}", "cluster.max_nodes=2", "cluster.nodes=2"])
    err = capsys.readouterr().err
    assert status == 2
    assert "`sbatch " in err and ".submission_file_" in err and "(exit 1)" in err
    assert "sbatch: error: Batch job submission failed: Node count specification invalid" in err
    with pytest.raises(SubmissionError):
        submit_training("pretrain", str(counter_recipe), [f"cluster.runs_root={tmp_path}", "cluster.max_nodes=2",
                                                          "cluster.nodes=2"], "localhost_slurm", entry=ENTRY)


def test_code_snapshot_is_what_the_job_runs(slurm, tmp_path, counter_recipe, capsys):
    status = submit_main(["pretrain", str(counter_recipe), "--cluster", "localhost_slurm", "--entry", ENTRY,
                          "--wait", f"cluster.runs_root={tmp_path}", "cluster.snapshot_code=true", "steps=3",
                          "sleep_s=0"])
    printed = capsys.readouterr().out
    assert status == 0 and ": completed" in printed, printed
    (run_dir,) = tmp_path.glob("pretrain-*")
    (snapshot,) = (tmp_path / ".code").iterdir()
    assert (snapshot / "slurm" / "jobs.py").is_file() and (snapshot / "personvit" / "checkpoint.py").is_file()
    start = next(e for e in read_events(run_dir) if e["event"] == "start")
    assert start["code"] == str(snapshot)
