"""Exact resume of `personvit finetune`: SIGKILL (world size 1, 2 and 4, gloo) or a preemption signal
(USR2 to one rank of 2), rerun with the same command, and the final checkpoint is bitwise equal to an
uninterrupted run's (`personvit ckpt compare`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from personvit.checkpoint import compare_checkpoints
from personvit.engine.finetune import EXIT_PREEMPTED
from tests.support.kill_resume import checkpoint_step_reached, kill_and_resume, run_once
from tests.support.reid_data import SMALL, TINY_CONFIG, reid_shards

# 20 train ids, ~150 images: 3 batches of 8 ids x 4 per epoch, 3 epochs = 9 steps, a checkpoint every 2.
OVERRIDES = [*SMALL, "train.epochs=3", "train.num_ids=8", "checkpoint.every_steps=2", "data.num_workers=1",
             "eval.save_features=false", "dist.timeout_s=120"]


def _env() -> dict[str, str]:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _cmd(shards: Path, run_dir: Path, nproc: int) -> list[str]:
    args = ["finetune", str(TINY_CONFIG), f"data.shards={shards}", f"run.dir={run_dir}", *OVERRIDES]
    if nproc == 1:
        return [sys.executable, "-m", "personvit", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "personvit", *args]


def _compare_cli(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "personvit", "ckpt", "compare", str(a), str(b)],
                          capture_output=True, text=True, env=_env())


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return reid_shards(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(shards: Path, tmp_path_factory) -> dict[int, Path]:
    """Uninterrupted runs, world size 1, 2 and 4."""
    runs = {}
    for nproc in (1, 2, 4):
        run_dir = tmp_path_factory.mktemp(f"ref{nproc}")
        attempt = run_once(_cmd(shards, run_dir, nproc), env=_env(), cwd=run_dir)
        assert attempt.returncode == 0, attempt.output[-3000:]
        runs[nproc] = run_dir
    return runs


# World size 4: the first size where a sum over ranks depends on its order (engine/grad_sync.py).
@pytest.mark.parametrize("nproc", [1, 2, 4])
def test_sigkill_and_rerun_is_bitwise_equal(nproc: int, shards: Path, reference: dict[int, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    # Two kills on one process, one on more (a torchrun launch costs more start-up than the training).
    triggers = [checkpoint_step_reached(ckpts, 2), checkpoint_step_reached(ckpts, 5)][:2 if nproc == 1 else 1]
    attempts = kill_and_resume(_cmd(shards, run_dir, nproc), triggers, env=_env(), cwd=tmp_path)
    assert [a.killed for a in attempts] == [True] * len(triggers) + [False]
    assert "resumed from" in attempts[-1].output
    cmp = _compare_cli(reference[nproc], run_dir)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    ref = json.loads((reference[nproc] / "results.json").read_text())
    got = json.loads((run_dir / "results.json").read_text())
    assert {k: got[k] for k in ("mAP", "rank1", "mINP")} == {k: ref[k] for k in ("mAP", "rank1", "mINP")}


def test_compare_detects_a_different_run(reference: dict[int, Path]) -> None:
    # Control for the test above: world sizes 1 and 2 train differently, and compare must say so.
    cmp = _compare_cli(reference[1], reference[2])
    assert cmp.returncode == 1 and "differ" in (cmp.stdout + cmp.stderr)


def _worker_pids(root_pid: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != root_pid:
                continue
            env = dict(kv.split("=", 1) for kv in (entry / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def test_preemption_signal_to_one_rank_saves_together_and_resumes_exactly(
        shards: Path, reference: dict[int, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = _cmd(shards, run_dir, 2)
    log = open(tmp_path / "first.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        fired = checkpoint_step_reached(run_dir / "checkpoints", 2)
        while not fired():
            assert proc.poll() is None and time.monotonic() < deadline, "run ended before its first checkpoint"
            time.sleep(0.02)
        pids = _worker_pids(proc.pid)
        assert sorted(pids) == [0, 1], pids
        os.kill(pids[1], signal.SIGUSR2)  # only rank 1 is warned; rank 0 must agree and stop with it
        rc = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.seek(0)
    output = log.read()
    # torchrun reports a failed worker as its own exit 1; the workers' exit code is in the log.
    assert rc == 1 and f"exitcode  : {EXIT_PREEMPTED}" in output, output[-3000:]
    assert "stopped for preemption" in output
    assert not (run_dir / "results.json").exists()
    final = run_once(cmd, env=_env(), cwd=tmp_path)
    assert final.returncode == 0 and "resumed from" in final.output, final.output[-3000:]
    assert compare_checkpoints(reference[2], run_dir) is None
