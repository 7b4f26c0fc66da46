"""Run folder, metrics.jsonl, progress output off a terminal, CLI dispatch."""

import io
import json
import subprocess
import sys

from personvit.runlog import MetricsLogger, ProgressReporter, resolve_run_dir


def test_metrics_jsonl_and_truncate(tmp_path):
    m = MetricsLogger(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        m.log(step=step, loss=1.0 / step, bad=float("nan"))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[0]["bad"] == "nan"
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a line cut by SIGKILL
    m.truncate_after(3)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    MetricsLogger(tmp_path / "other.jsonl", enabled=False).log(step=1, loss=1.0)
    assert not (tmp_path / "other.jsonl").exists()


def test_plain_progress_lines_when_not_a_tty():
    buf = io.StringIO()
    with ProgressReporter(total=4, desc="pretrain", every_s=0.0, stream=buf) as p:
        for _ in range(4):
            p.advance(1, loss=0.5)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("pretrain: 4/4 (100.0%)") and "loss=0.5" in lines[-1]


def test_run_dir_uses_slurm_job_id(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    assert resolve_run_dir(None, "pretrain").name == "pretrain-777"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert resolve_run_dir(None, "finetune").name == "finetune-5_2"
    assert resolve_run_dir(str(tmp_path), "x") == tmp_path


def test_cli_entry_points():
    out = subprocess.run([sys.executable, "-m", "personvit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "pretrain" in out.stdout and "ckpt" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "personvit", "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr
