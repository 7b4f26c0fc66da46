"""The real tiny pretraining and fine-tuning engines, sent through personvit-submit to the local Slurm."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from personvit.checkpoint import compare_checkpoints, load_checkpoint, resolve_checkpoint_path
from slurm.restarts import read_events, restart_history
from slurm.submit import submit_training
from slurm.sweep import collect, submit_sweep
from tests.slurm.helpers import checkpoint_step, starts, task_pids, wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slurm

# Small enough for 2 shared cores: depth-2 tiny ViT, batch 8, 2 local crops, 25 steps per epoch.
TINY_PRETRAIN = ["train.epochs=3", "data.batch_size_per_rank=8", "data.n_local=2", "model.depth=2",
                 "model.head.out_dim=256", "model.head.patch_out_dim=256", "checkpoint.every_steps=4",
                 "checkpoint.keep_every_epochs=1"]
TINY_FINETUNE = ["train.epochs=1", "model.depth=2", "train.num_ids=4", "train.num_instances=4"]


@pytest.fixture(scope="module")
def pretrained(slurm_cluster, synth_shards, slurm_tmp):
    """A tiny pretraining job run to completion on Slurm, and a twin requeued three times meanwhile."""
    root = slurm_tmp / "pretrain"
    common = [f"data.shards={synth_shards['luperson']}", f"cluster.runs_root={root}", *TINY_PRETRAIN]
    config = str(REPO / "configs/pretrain/tiny_cpu.yaml")
    plain = submit_training("pretrain", config, common, "localhost_slurm")
    requeued = submit_training("pretrain", config, common, "localhost_slurm")
    job, run_dir = requeued.jobs[0], requeued.run_dirs()[0]
    for attempt in range(1, 4):
        wait_for(f"attempt {attempt} running", lambda a=attempt: starts(run_dir) == a, timeout=120)
        floor = max(checkpoint_step(run_dir), 0)
        wait_for(f"attempt {attempt} past a new checkpoint", lambda f=floor: checkpoint_step(run_dir) > f, timeout=120)
        slurm_cluster.run("scontrol", "requeue", job.job_id)
        # submitit ignores the requeue's SIGTERM, so the task would train on until SIGKILL (KillWait)
        # and, on an idle machine, finish before the third requeue: kill it now, as a node loss would.
        for pid in task_pids(job.job_id).values():
            os.kill(pid, signal.SIGKILL)
    plain.jobs[0].result()
    job.result()
    return {"plain": plain.run_dirs()[0], "requeued": run_dir, "job": job}


def test_tiny_pretrain_job_completes(pretrained):
    run_dir = pretrained["plain"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
    final = load_checkpoint(resolve_checkpoint_path(run_dir))
    assert final["epoch"] == 3 and final["end_of_epoch"]
    assert [e["event"] for e in read_events(run_dir)] == ["start", "end"]


def test_scontrol_requeue_three_times_is_bitwise_equal_to_uninterrupted(pretrained):
    events = read_events(pretrained["requeued"])
    assert [e["restart_count"] for e in events if e["event"] == "start"] == [0, 1, 2, 3]
    assert len(restart_history(events)) == 3
    assert compare_checkpoints(pretrained["requeued"], pretrained["plain"]) is None


def test_finetune_array_of_three_and_sweep_table(slurm, synth_shards, pretrained, tmp_path, capsys):
    sub = submit_sweep(str(REPO / "configs/finetune/tiny_cpu.yaml"), [str(pretrained["plain"])],
                       [str(synth_shards["market"])], [*TINY_FINETUNE], "localhost_slurm",
                       out_dir=str(tmp_path / "sweep"), every_epochs=1, parallel=2)
    assert len(sub.jobs) == 3 and all(j.job_id == f"{sub.job_id}_{i}" for i, j in enumerate(sub.jobs))
    script = next((tmp_path / "sweep").glob(f"*/{sub.job_id}_submission.sh")).read_text()
    assert "#SBATCH --array=0-2%2" in script
    for job in sub.jobs:
        job.result()
    rows = collect(tmp_path / "sweep")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["status"] == "done" for r in rows)
    for row, run_dir in zip(rows, sub.run_dirs()):
        results = json.loads((run_dir / "results.json").read_text())
        assert row["mAP"] == results["mAP"] and 0.0 <= results["mAP"] <= 1.0
        assert run_dir.name == f"{sub.job_id}_{row['task']}"
    table = (tmp_path / "sweep" / "results.md").read_text()
    assert table.count("| done |") == 3 and "synth-market" in table
    csv_lines = (tmp_path / "sweep" / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("task,checkpoint,epoch,dataset,mAP")
