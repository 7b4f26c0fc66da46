"""`personvit pretrain` end to end on real shards: learning, logs, state, stops, errors.

Most runs are in-process (`run(cfg)`: no interpreter start-up to pay); the ones that check the
command's exit status and message run it as a subprocess.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from personvit import preemption  # noqa: E402
from personvit.checkpoint import CheckpointManager, compare_checkpoints, load_checkpoint  # noqa: E402
from personvit.cli import main as cli_main  # noqa: E402
from personvit.config.core import load_config  # noqa: E402
from personvit.config.pretrain import PretrainConfig  # noqa: E402
from personvit.data.batch_layout import BatchLayout  # noqa: E402
from personvit.engine.pretrain import run  # noqa: E402
from personvit.engine.pretrain_state import LayoutPart  # noqa: E402
from tests.support.pretrain import SMALL, TINY_CONFIG, pretrain_cmd, subprocess_env, synthetic_lup_shards  # noqa: E402

STEPS_PER_EPOCH = 128 // 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return synthetic_lup_shards(tmp_path_factory.mktemp("lup"), images=128)


def _cfg(shards: Path, run_dir: Path, *overrides: str) -> PretrainConfig:
    base = [f"data.shards={shards}", f"run.dir={run_dir}", "run.log_every_steps=1", *SMALL]
    return load_config(PretrainConfig, TINY_CONFIG, [*base, *overrides])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _clean_stop_flag():
    preemption.reset()
    yield
    preemption.reset()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # In-process runs share 2 cores with other test processes: one intra-op thread is faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_loss_decreases_against_a_fixed_teacher(shards, tmp_path):
    # With the EMA and the centres running, the DINO term of a tiny net first *rises* towards ln(K)
    # while the centre settles (notes/tiny-ssl.md: flat for hundreds of steps), so a short run says
    # little. Freezing the teacher and the centres fixes the objective: then the student must fit it.
    cfg = _cfg(
        shards,
        tmp_path / "run",
        "train.epochs=5",
        "loss.warmup_teacher_temp_epochs=0",
        "optim.momentum_teacher=1.0",
        "loss.center_momentum=1.0",
        "loss.center_momentum2=1.0",
    )
    run(cfg)
    rows = _metrics(tmp_path / "run")
    first = {k: sum(r[k] for r in rows[:STEPS_PER_EPOCH]) / STEPS_PER_EPOCH for k in ("loss", "dino", "mim")}
    last = {k: sum(r[k] for r in rows[-STEPS_PER_EPOCH:]) / STEPS_PER_EPOCH for k in ("loss", "dino", "mim")}
    assert last["loss"] < first["loss"] - 0.3, (first, last)
    assert last["dino"] < first["dino"] and last["mim"] < first["mim"], (first, last)


def test_logs_and_checkpoint_state_follow_the_recipe(shards, tmp_path):
    cfg = _cfg(
        shards,
        tmp_path / "run",
        "train.epochs=2",
        "checkpoint.every_steps=3",
        "checkpoint.keep_every_epochs=1",
        "loss.teacher_temp=0.07",  # the paper's warm-up shape (the tiny recipe keeps 0.04 throughout)
        "loss.warmup_teacher_temp_epochs=2",
    )
    result = run(cfg)
    total = 2 * STEPS_PER_EPOCH
    # Saved at 3, 6, 8 (epoch end), 9, 12, 15, 16 (epoch end): the last 2 plus every epoch end remain.
    kept = [
        load_checkpoint(p)["step"] for p in CheckpointManager(tmp_path / "run" / "checkpoints").committed()
    ]
    assert kept == [8, 15, 16]
    assert result["step"] == total and result["epoch"] == 2
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, total + 1))
    for r in rows:
        assert r["loss"] == pytest.approx(r["dino"] + r["mim"], rel=1e-5)
        assert {
            "lr",
            "wd",
            "momentum",
            "teacher_temp",
            "teacher_patch_temp",
            "teacher_entropy",
            "teacher_mean_entropy",
            "images_per_s",
            "data_wait",
        } <= r.keys()
        assert 0.0 <= r["data_wait"] <= 1.0 and r["images_per_s"] > 0
        # Entropies in nats of K = 256 prototypes (SMALL head); the batch mean is at least as spread.
        assert 0.0 <= r["teacher_entropy"] <= r["teacher_mean_entropy"] + 1e-4 <= math.log(256) + 1e-3
    lrs = [r["lr"] for r in rows]
    peak = min(8e-3 * 16 / 256, 2e-3)
    assert (
        max(lrs) == pytest.approx(peak, rel=1e-6) and lrs.index(max(lrs)) == STEPS_PER_EPOCH - 1
    )  # 1 warm-up epoch
    momentum, wd = [r["momentum"] for r in rows], [r["wd"] for r in rows]
    assert all(b > a for a, b in zip(momentum, momentum[1:])) and all(b > a for a, b in zip(wd, wd[1:]))
    assert [r["teacher_temp"] for r in rows[::STEPS_PER_EPOCH]] == [
        0.04,
        0.07,
    ]  # 2 warm-up epochs: 0.04 -> 0.07

    payload = load_checkpoint(result["checkpoint"])
    state = payload["state"]
    assert payload["step"] == total and payload["end_of_epoch"]
    assert {"student", "teacher", "optimizer", "scaler", "loss", "loader", "rng", "layout"} <= state.keys()
    assert state["loader"] == {"epoch": 2, "next_batch": 0, "corrupt_skipped": 0}
    assert state["loss"]["center"].abs().sum() > 0  # centres moved and were saved
    # The teacher is an EMA, not a copy: it differs from the student after training.
    assert not torch.equal(
        state["teacher"]["backbone.blocks.0.attn.qkv.weight"],
        state["student"]["backbone.blocks.0.attn.qkv.weight"],
    )
    # Epoch 0 froze the last layer: its AdamW state starts one epoch late.
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {total, total - STEPS_PER_EPOCH}


def test_rerun_of_a_finished_run_is_a_no_op(shards, tmp_path):
    cfg = _cfg(shards, tmp_path / "run", "train.epochs=1")
    first = run(cfg)
    mtime = Path(first["checkpoint"]).stat().st_mtime_ns
    again = run(cfg)
    assert again["step"] == first["step"] and Path(again["checkpoint"]).stat().st_mtime_ns == mtime


def test_preemption_saves_at_the_current_step_and_resume_is_exact(shards, tmp_path):
    overrides = ("train.epochs=2", "checkpoint.every_steps=0")
    reference = run(_cfg(shards, tmp_path / "ref", *overrides))

    run_dir = tmp_path / "pre"
    cfg = _cfg(shards, run_dir, *overrides)

    def stop_after(step: int) -> None:  # what the USR2 handler does, from a watchdog thread
        while not (run_dir / "metrics.jsonl").exists() or _metrics(run_dir)[-1]["step"] < step:
            time.sleep(0.01)
        preemption.request_stop("test")

    watcher = threading.Thread(target=stop_after, args=(3,), daemon=True)
    watcher.start()
    with pytest.raises(preemption.Preempted) as stop:
        run(cfg)
    watcher.join()
    assert 3 <= stop.value.step < 2 * STEPS_PER_EPOCH
    saved = CheckpointManager(run_dir / "checkpoints").latest()
    assert saved is not None and load_checkpoint(saved)["step"] == stop.value.step  # mid-epoch: every_steps=0

    preemption.reset()
    resumed = run(cfg)
    assert resumed["step"] == reference["step"]
    assert compare_checkpoints(reference["checkpoint"], resumed["checkpoint"]) is None


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_paths(shards, tmp_path, precision):
    # CUDA runs bf16 (or fp16 + scaler); the same code paths run here under CPU autocast.
    result = run(_cfg(shards, tmp_path / "run", "train.epochs=1", f"train.precision={precision}"))
    rows = _metrics(tmp_path / "run")
    assert len(rows) == STEPS_PER_EPOCH and all(0 < r["loss"] < 20 for r in rows)
    scaler = load_checkpoint(result["checkpoint"])["state"]["scaler"]
    if precision == "fp16":
        assert 0 < scaler["scale"] <= 2.0**16  # a live scaler, saved for resume
    else:
        assert scaler == {}


def test_without_mim_the_patch_term_is_logged_but_not_trained(shards, tmp_path):
    run(_cfg(shards, tmp_path / "run", "train.epochs=1", "loss.lambda2=0"))
    rows = _metrics(tmp_path / "run")
    assert all(r["loss"] == pytest.approx(r["dino"]) and r["mim"] > 0 for r in rows)


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(shards, tmp_path):
    run_dir = tmp_path / "run"
    cmd = pretrain_cmd(
        shards,
        run_dir,
        "optim.base_lr=1e30",
        "optim.max_lr=1e30",
        "optim.warmup_epochs=0",
        "checkpoint.every_steps=1",
        "train.epochs=1",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("personvit pretrain: error:")]
    assert len(errors) == 1 and "non-finite loss at step 1" in errors[0] and "dino=nan" in errors[0], (
        proc.stderr[-2000:]
    )
    assert "Traceback" not in proc.stderr
    latest = CheckpointManager(run_dir / "checkpoints").latest()
    assert latest is not None and load_checkpoint(latest)["step"] == 1
    assert all(torch.isfinite(v).all() for v in load_checkpoint(latest)["state"]["student"].values())


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=1e-3", "unknown config key 'optim.lr'"),
    ("model.patch_size=16", "model.patch_size 16 != data.patch_size 8"),
    ("train.precision=fp64", "'train.precision': must be one of"),
])  # fmt: skip
def test_config_mistakes_are_one_line_errors(shards, tmp_path, capsys, override, message):
    status = cli_main(
        ["pretrain", str(TINY_CONFIG), f"data.shards={shards}", f"run.dir={tmp_path}", override]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0], err


def test_resume_with_another_batch_size_is_refused_unless_allowed_then_keeps_the_global_batch(shards, tmp_path, capsys):
    first = run(_cfg(shards, tmp_path / "run", "train.epochs=1"))
    argv = [
        "pretrain",
        str(TINY_CONFIG),
        f"data.shards={shards}",
        f"run.dir={tmp_path / 'run'}",
        *SMALL,
        "data.batch_size_per_rank=8",
        "train.epochs=2",
    ]
    # The run folder's contract refuses it first, naming the key...
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "\n  data.batch_size_per_rank: 16 -> 8\n" in err and "Traceback" not in err
    # ...and allowing it continues the run's layout (16 per step) as 2 micro-batches of 8: same steps.
    assert cli_main([*argv, "--allow-change", "data.batch_size_per_rank"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 * first["step"]


def test_layout_part_refuses_another_layout_unless_elastic():
    saved = BatchLayout(1, 16, 8).state_dict()
    with pytest.raises(ValueError, match="resume needs the same world size and batch size"):
        LayoutPart(BatchLayout(1, 8, 16), elastic=False).load_state_dict(saved)
    part = LayoutPart(BatchLayout(2, 16, 4), elastic=True)
    part.load_state_dict(saved)
    assert part.layout == BatchLayout(1, 16, 8)
