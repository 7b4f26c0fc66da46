"""`personvit finetune` keeps the run-folder contract too: a changed recipe is refused before anything is
written, and Ctrl-C (to the whole process group, loader workers included) ends in one line, exit 130,
and a rerun that ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.kill_resume import metrics_step_reached, run_once
from tests.support.pretrain import subprocess_env
from tests.support.reid_data import SMALL, TINY_CONFIG, reid_shards

# 3 batches of 8 ids x 4 per epoch, 3 epochs = 9 steps, a checkpoint every 2.
OVERRIDES = [*SMALL, "train.epochs=3", "train.num_ids=8", "checkpoint.every_steps=2", "run.log_every_steps=1",
             "data.num_workers=2", "eval.save_features=false"]
STEPS = 9


def _cmd(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "personvit", "finetune", str(TINY_CONFIG), f"data.shards={shards}",
            f"run.dir={run_dir}", *OVERRIDES, *extra]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return reid_shards(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ft-reference") / "run"
    attempt = run_once(_cmd(shards, run_dir), env=subprocess_env(), timeout=240)
    assert attempt.returncode == 0, attempt.output[-3000:]
    return run_dir


def test_changed_recipe_is_refused_and_nothing_written(shards, reference):
    before = {p: p.read_bytes() for p in sorted(reference.rglob("*")) if p.is_file()}
    attempt = run_once(_cmd(shards, reference, "train.base_lr=0.2", "model.depth=3"), env=subprocess_env(),
                       timeout=240)
    assert attempt.returncode == 2 and "Traceback" not in attempt.output, attempt.output[-3000:]
    assert "\n  model.depth: 2 -> 3\n  train.base_lr: 0.1 -> 0.2\n" in attempt.output
    assert {p: p.read_bytes() for p in sorted(reference.rglob("*")) if p.is_file()} == before


def test_ctrl_c_is_one_line_exit_130_and_resumes_exactly(shards, reference, tmp_path):
    seed = int(os.environ.get("PERSONVIT_KILL_SEED", random.randrange(2**31)))
    step = random.Random(seed).randint(1, STEPS - 4)
    context = f"PERSONVIT_KILL_SEED={seed}, SIGINT after step {step}: "
    run_dir = tmp_path / "run"
    stopped = run_once(_cmd(shards, run_dir), metrics_step_reached(run_dir / "metrics.jsonl", step),
                       env=subprocess_env(), timeout=240, stop_signal=signal.SIGINT)
    assert stopped.killed and stopped.returncode == 130, context + stopped.output[-3000:]
    assert "Traceback" not in stopped.output and "KeyboardInterrupt" not in stopped.output, context + stopped.output
    (line,) = [x for x in stopped.output.splitlines() if x.startswith("personvit finetune:")]
    assert " interrupted at step " in line and line.endswith("rerun the same command to resume"), context + line
    rerun = run_once(_cmd(shards, run_dir), env=subprocess_env(), timeout=240)
    assert rerun.returncode == 0, context + rerun.output[-3000:]
    cmp = subprocess.run([sys.executable, "-m", "personvit", "ckpt", "compare", str(reference), str(run_dir)],
                         capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert cmp.returncode == 0, context + cmp.stdout + cmp.stderr
