"""`--cluster local`: the same job wrapper through submitit's local executor, no Slurm involved."""

from __future__ import annotations

from pathlib import Path

from personvit.checkpoint import load_checkpoint, resolve_checkpoint_path
from slurm.restarts import read_events
from slurm.status import run_status
from slurm.submit import main as submit_main

REPO = Path(__file__).resolve().parents[2]


def test_local_profile_runs_the_job_without_slurm(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    recipe = tmp_path / "counter.yaml"
    recipe.write_text("steps: 3\nsleep_s: 0\nevery_steps: 0\n")
    status = submit_main(["pretrain", str(recipe), "--cluster", "local", "--entry", "tests.slurm.counter_job:main",
                          "--wait", f"cluster.runs_root={tmp_path / 'runs'}"])
    printed = capsys.readouterr().out
    assert status == 0 and ": completed" in printed, printed
    (run_dir,) = (tmp_path / "runs").glob("pretrain-*")
    assert load_checkpoint(resolve_checkpoint_path(run_dir))["step"] == 3
    assert [e["event"] for e in read_events(run_dir)] == ["start", "end"]
    st = run_status(run_dir)
    assert st.state == "COMPLETED" and st.state_source == "run log" and st.checkpoint["step"] == 3
