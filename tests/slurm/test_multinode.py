"""Jobs across two simulated nodes: node[01-02], one network namespace, address, hostname and slurmd
each (slurm/local_cluster/netns.py), 2 tasks per node, world size 4 over gloo.

The references are uninterrupted runs of the same recipe started by torch.distributed.run with 4
local processes on 127.0.0.1: the Slurm jobs, interrupted or not, must end bitwise equal to them.
What this cannot show (one kernel, no NCCL, no real network): README "Multi-node".
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from personvit.checkpoint import load_checkpoint, resolve_checkpoint_path
from personvit.cli import main as personvit_main
from personvit.distributed import port_from_job_id
from slurm.restarts import read_events, restart_history
from slurm.status import run_status
from slurm.submit import main as submit_main
from slurm.submit import submit_training
from tests.slurm.helpers import checkpoint_step, starts, task_pids, wait_done, wait_for

REPO = Path(__file__).resolve().parents[2]
PROFILE = "local_2node"
PRETRAIN_RECIPE = str(REPO / "configs/pretrain/tiny_cpu.yaml")
# 200 images / (8 x 4 ranks) = 6 steps per epoch, 12 in all; a checkpoint every 2 steps.
TINY_PRETRAIN = ["train.epochs=2", "data.batch_size_per_rank=8", "data.n_local=2", "model.depth=2",
                 "model.head.out_dim=256", "model.head.patch_out_dim=256", "checkpoint.every_steps=2"]
TOTAL_STEPS = 12
# PK batches: 8 identities x 2 images, 2 identities per rank (batch-hard mining needs 2).
TINY_FINETUNE = ["train.epochs=1", "model.depth=2", "train.num_ids=8", "train.num_instances=2"]
EXPECTED_PLACEMENT = {0: "node01", 1: "node01", 2: "node02", 3: "node02"}
JOB_TIMEOUT_S = 300
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

_ENV_LINE = re.compile(r"JobEnvironment\(job_id=(\w+), hostname=(\S+), local_rank=(\d+)\(\d+\), "
                       r"node=(\d+)\(\d+\), global_rank=(\d+)\((\d+)\)\)")


def rank_logs(run_dir: Path, job_id: str) -> dict[int, str]:
    """{rank: stdout + stderr} of one job's submitit logs (every attempt appends to the same files)."""
    out: dict[int, str] = {}
    for path in sorted(run_dir.glob(f"{job_id}_*_log.*")):
        rank = int(path.name.split("_")[1])
        out[rank] = out.get(rank, "") + path.read_text(errors="replace")
    return out


def placement(run_dir: Path, job_id: str) -> dict[int, set[str]]:
    """{global rank: hostnames it reported}, from the `Starting with JobEnvironment(...)` line
    submitit logs in every task (`hostname` is the task's own `socket.gethostname()`)."""
    seen: dict[int, set[str]] = {}
    for text in rank_logs(run_dir, job_id).values():
        for m in _ENV_LINE.finditer(text):
            assert m.group(6) == "4", m.group(0)
            seen.setdefault(int(m.group(5)), set()).add(m.group(2))
    return seen


def _submit_pretrain(shards: dict[str, Path], tag: str):
    """Submit the tiny recipe through personvit-submit's code path; (job, run folder)."""
    overrides = [f"data.shards={shards['luperson']}", f"cluster.runs_root={shards['root'] / tag}", *TINY_PRETRAIN]
    sub = submit_training("pretrain", PRETRAIN_RECIPE, overrides, PROFILE)
    return sub.jobs[0], sub.run_dirs()[0]


def _finish(job) -> None:
    wait_done(job, timeout=JOB_TIMEOUT_S)
    job.results()  # raises with the job's error when it failed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _equal(a: Path, b: Path) -> bool:
    """`personvit ckpt compare A B` (exit 0: every tensor and counter bitwise equal)."""
    return personvit_main(["ckpt", "compare", str(a), str(b)]) == 0


@pytest.fixture(scope="module")
def shards(slurm_2node, synth_shards, slurm_tmp):
    """The session's synthetic shard sets, and this module's folder for run folders."""
    root = slurm_tmp / "multinode"
    root.mkdir(exist_ok=True)
    return {**synth_shards, "root": root}


@pytest.fixture(scope="module")
def reference(shards):
    """The torchrun run at world size 4 (4 local processes, gloo on 127.0.0.1), started in the
    background; call it for its run folder."""
    run_dir = shards["root"] / "torchrun-ws4"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # torchrun's variables only
    log = open(shards["root"] / "torchrun.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4",
                             "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                             "-m", "personvit", "pretrain", PRETRAIN_RECIPE, f"data.shards={shards['luperson']}",
                             f"run.dir={run_dir}", *TINY_PRETRAIN],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    log.close()

    def wait() -> Path:
        rc = proc.wait(timeout=JOB_TIMEOUT_S)
        assert rc == 0, f"torchrun reference failed ({rc}); see {shards['root'] / 'torchrun.log'}"
        return run_dir

    yield wait
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def plain(slurm_2node, shards, reference):
    """An uninterrupted 2 x 2 pretraining job (runs while the reference trains)."""
    job, run_dir = _submit_pretrain(shards, "plain")
    _finish(job)
    return job, run_dir


@pytest.fixture(scope="module")
def requeued(slurm_2node, shards, plain):
    """A 2 x 2 pretraining job hit by `scontrol requeue` after its first periodic checkpoint."""
    job, run_dir = _submit_pretrain(shards, "requeued")
    wait_for("a checkpoint past step 2", lambda: 2 <= checkpoint_step(run_dir) < TOTAL_STEPS, JOB_TIMEOUT_S)
    slurm_2node.run("scontrol", "requeue", job.job_id)
    # submitit ignores the requeue's SIGTERM (the tasks would train on until KillWait's SIGKILL and
    # might finish first): kill every rank on both nodes now, as a node failure would.
    for pid in task_pids(job.job_id).values():
        os.kill(pid, signal.SIGKILL)
    _finish(job)
    return job, run_dir


@pytest.fixture(scope="module")
def preempted(slurm_2node, shards, requeued):
    """A 2 x 2 pretraining job preempted the way submitit does it: SIGTERM, then USR2 to every task."""
    job, run_dir = _submit_pretrain(shards, "preempted")
    wait_for("a checkpoint past step 2", lambda: 2 <= checkpoint_step(run_dir) < TOTAL_STEPS, JOB_TIMEOUT_S)
    job._interrupt(timeout=False)  # scancel --signal SIGTERM, then --signal USR2 (all steps, both nodes)
    _finish(job)
    return job, run_dir


def test_ranks_run_two_per_node_and_meet_on_the_first_node(slurm_2node, plain):
    job, run_dir = plain
    assert placement(run_dir, job.job_id) == {r: {h} for r, h in EXPECTED_PLACEMENT.items()}
    nodelist = slurm_2node.run("sacct", "-n", "-X", "-P", "-j", job.job_id, "-o", "NodeList").stdout.split()
    assert nodelist == ["node[01-02]"]
    # Rank 0 (node01) logs the rendezvous: the first host of node[01-02] and the job-id port.
    assert f"rendezvous=node01:{port_from_job_id(job.job_id)}" in rank_logs(run_dir, job.job_id)[0]
    assert [e["host"] for e in read_events(run_dir) if e["event"] == "start"] == ["node01"]


def test_uninterrupted_2x2_job_equals_torchrun_world_size_4(plain, reference):
    _, run_dir = plain
    assert load_checkpoint(resolve_checkpoint_path(run_dir))["step"] == TOTAL_STEPS
    assert _equal(run_dir, reference())


def test_scontrol_requeue_ends_bitwise_equal_to_torchrun(requeued, reference):
    job, run_dir = requeued
    events = read_events(run_dir)
    assert [e["restart_count"] for e in events if e["event"] == "start"] == [0, 1]
    assert [r.reason.split(" ")[0] for r in restart_history(events)] == ["killed"]
    assert all(hosts == {EXPECTED_PLACEMENT[r]} for r, hosts in placement(run_dir, job.job_id).items())
    assert _equal(run_dir, reference())


def test_usr2_preemption_saves_one_step_on_every_rank_and_resumes_equal(preempted, reference):
    job, run_dir = preempted
    events = read_events(run_dir)
    stops = [e for e in events if e["event"] == "stop"]
    assert len(stops) == 1 and stops[0]["reason"] == "preempted"
    assert [r.reason for r in restart_history(events)] == ["preempted"] and starts(run_dir) == 2
    # Every rank, on both nodes, logged the collective save of the same step.
    saved = {rank: re.findall(r"checkpoint of step (\d+) saved", text)
             for rank, text in rank_logs(run_dir, job.job_id).items()}
    assert sorted(saved) == [0, 1, 2, 3]
    assert all(steps == [str(stops[0]["step"])] for steps in saved.values()), saved
    assert _equal(run_dir, reference())


def test_status_shows_the_restarts(requeued, preempted, capsys):
    for _, run_dir in (requeued, preempted):
        wait_for("Slurm state COMPLETED", lambda d=run_dir: run_status(d).state == "COMPLETED", 60)
    capsys.readouterr()
    assert submit_main(["status", str(requeued[1]), str(preempted[1])]) == 0
    out = capsys.readouterr().out
    assert out.count("COMPLETED") == 2 and out.count("restarts: 1") == 2
    assert "#1: killed without warning" in out
    step = next(e["step"] for e in read_events(preempted[1]) if e["event"] == "stop")
    assert f"#1: preempted (saved at step {step})" in out


def test_two_node_finetuning_job(slurm_2node, shards, plain):
    sub = submit_training("finetune", str(REPO / "configs/finetune/tiny_cpu.yaml"),
                          [f"data.shards={shards['market']}", f"model.init={plain[1]}",
                           f"cluster.runs_root={shards['root'] / 'finetune'}", *TINY_FINETUNE], PROFILE)
    job, run_dir = sub.jobs[0], sub.run_dirs()[0]
    _finish(job)
    assert placement(run_dir, job.job_id) == {r: {h} for r, h in EXPECTED_PLACEMENT.items()}
    final = load_checkpoint(resolve_checkpoint_path(run_dir))
    assert final["state"]["world_size"] == 4
    results = json.loads((run_dir / "results.json").read_text())
    assert 0.0 <= results["mAP"] <= 1.0 and results["step"] == final["step"]
