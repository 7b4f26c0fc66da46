"""A pretraining run folder is a contract (README "Run folders"): the config it was started with, one
writer at a time, and faults that end in one line saying what is safe.

Every run is the tiny recipe (4 steps per epoch, 2 epochs, a checkpoint every 2 steps) launched as
the user would (`python -m personvit pretrain ...`); a run that resumes after a refusal, a second
writer, a SIGKILL, a full disk, Ctrl-C or a truncated checkpoint must end bitwise equal to one
uninterrupted run (`personvit ckpt compare`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from personvit.checkpoint import CheckpointManager, compare_checkpoints, load_checkpoint
from personvit.runlog import MetricsLogger
from personvit.write_errors import WriteFailedError
from tests.support.kill_resume import checkpoint_step_reached, metrics_step_reached, run_once
from tests.support.pretrain import pretrain_cmd, subprocess_env, synthetic_lup_shards

IMAGES, STEPS = 64, 8
RUN = ["train.epochs=2", "run.log_every_steps=1", "checkpoint.every_steps=2", "data.num_workers=0"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return synthetic_lup_shards(tmp_path_factory.mktemp("lup"), images=IMAGES)


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """One uninterrupted run: what every other run here must end equal to."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    attempt = run_once(pretrain_cmd(shards, run_dir, *RUN), env=subprocess_env(), timeout=240)
    assert attempt.returncode == 0, attempt.output[-3000:]
    return run_dir


def _launch(shards: Path, run_dir: Path, *extra: str, **kw):
    return run_once(pretrain_cmd(shards, run_dir, *RUN, *extra), env=subprocess_env(), timeout=240, **kw)


def _copy(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _assert_identical(a: Path, b: Path, context: str = "") -> None:
    diff = compare_checkpoints(a, b)  # what `personvit ckpt compare` runs (used as a CLI once below)
    assert diff is None, f"{context}{diff}"


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("personvit pretrain:")]


def test_changed_seed_is_refused_with_a_one_line_diff_and_nothing_written(shards, reference, tmp_path):
    run_dir = _copy(reference, tmp_path / "run")
    before = _snapshot(run_dir)
    attempt = _launch(shards, run_dir, "run.seed=5")
    assert attempt.returncode == 2, attempt.output[-3000:]
    assert "Traceback" not in attempt.output
    assert "\n  run.seed: 0 -> 5\n" in attempt.output
    assert "--allow-change run.seed" in attempt.output
    assert "  run.dir:" not in attempt.output  # a moved run folder is not a change
    assert _snapshot(run_dir) == before  # config.yaml, history, lock record, checkpoints: byte for byte


def test_changed_architecture_is_a_fingerprint_error_not_a_size_mismatch(shards, reference, tmp_path):
    run_dir = _copy(reference, tmp_path / "run")
    attempt = _launch(shards, run_dir, "model.depth=3", "model.head.hidden_dim=64")
    assert attempt.returncode == 2, attempt.output[-3000:]
    assert "size mismatch" not in attempt.output and "Traceback" not in attempt.output
    assert "  model.depth: 2 -> 3\n  model.head.hidden_dim: 128 -> 64\n" in attempt.output


def test_every_rank_stops_when_rank_0_refuses(shards, reference, tmp_path):
    # torchrun, 2 gloo ranks: rank 0 refuses the world-size change, rank 1 learns it in the verdict
    # collective and stops too (instead of waiting for a rank that is gone until the timeout).
    run_dir = _copy(reference, tmp_path / "run")
    before = _snapshot(run_dir)
    attempt = run_once(pretrain_cmd(shards, run_dir, *RUN, "dist.timeout_s=60", nproc=2), env=subprocess_env(),
                       timeout=240)
    assert attempt.returncode != 0 and "\n  world_size: 1 -> 2\n" in attempt.output, attempt.output[-3000:]
    assert "error: rank 0 refused" in attempt.output, attempt.output[-3000:]
    assert _snapshot(run_dir) == before


def test_allow_change_proceeds_and_the_history_records_it(shards, reference, tmp_path):
    run_dir = _copy(reference, tmp_path / "run")
    config_before = (run_dir / "config.yaml").read_bytes()
    attempt = _launch(shards, run_dir, "run.seed=5", "train.epochs=3", "--allow-change", "run.seed")
    assert attempt.returncode == 0, attempt.output[-3000:]
    assert f"resumed from {run_dir}/checkpoints/ckpt-{STEPS:09d}.pt" in attempt.output
    import yaml

    starts = sorted((run_dir / "configs").glob("*.yaml"))
    assert [p.name for p in starts] == ["0000.yaml", "0001.yaml"]
    second = yaml.safe_load(starts[1].read_text())
    assert second["changed"] == [f"run.dir: {reference} -> {run_dir}", "run.seed: 0 -> 5", "train.epochs: 2 -> 3"]
    assert second["config"]["run"]["seed"] == 5 and second["fingerprint"]["world_size"] == 1
    assert {"time", "host", "pid", "slurm_job_id", "command"} <= set(second)
    assert (run_dir / "config.yaml").read_bytes() == config_before  # the first start's, untouched
    # The new seed is now the contract: going back to 0 is a change again.
    back = _launch(shards, run_dir, "train.epochs=3")
    assert back.returncode == 2 and "run.seed: 5 -> 0" in back.output, back.output[-2000:]


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _holder_pid(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_second_process_on_a_run_folder_is_refused_and_the_first_ends_as_a_lone_run(shards, reference, tmp_path):
    run_dir = tmp_path / "run"
    cmd = pretrain_cmd(shards, run_dir, *RUN)
    with open(tmp_path / "first.log", "w+") as log:
        first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=tmp_path,
                                 start_new_session=True)
        try:
            _wait_for(lambda: _holder_pid(run_dir) == first.pid, first, "the first run locked its folder")
            os.killpg(first.pid, signal.SIGSTOP)  # hold it there: the second launch meets a live holder
            try:
                second = run_once(cmd, env=subprocess_env(), cwd=tmp_path, timeout=120)
            finally:
                os.killpg(first.pid, signal.SIGCONT)
            assert first.wait(timeout=240) == 0, log.seek(0) or log.read()[-3000:]
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
    assert second.returncode == 2, second.output[-3000:]
    (line,) = _error_lines(second.output)
    assert f"is in use by pid {first.pid} on " in line and "Traceback" not in second.output
    cmp = subprocess.run([sys.executable, "-m", "personvit", "ckpt", "compare", str(reference), str(run_dir)],
                         capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert cmp.returncode == 0 and "identical" in cmp.stdout, cmp.stdout + cmp.stderr


def test_sigkilled_holder_leaves_no_stale_lock(shards, reference, tmp_path):
    run_dir = tmp_path / "run"
    killed = _launch(shards, run_dir, trigger=checkpoint_step_reached(run_dir / "checkpoints", 2))
    assert killed.killed and _holder_pid(run_dir) is not None
    rerun = _launch(shards, run_dir)
    assert rerun.returncode == 0 and "resumed from" in rerun.output, rerun.output[-3000:]
    _assert_identical(reference, run_dir)


def test_ctrl_c_at_a_random_step_is_one_line_exit_130_and_resumes_exactly(shards, reference, tmp_path):
    seed = int(os.environ.get("PERSONVIT_KILL_SEED", random.randrange(2**31)))
    step = random.Random(seed).randint(1, STEPS - 3)
    context = f"PERSONVIT_KILL_SEED={seed}, SIGINT after step {step}: "
    run_dir = tmp_path / "run"
    # SIGINT to the whole process group, like Ctrl-C in a terminal: the 2 loader workers get it too.
    stopped = _launch(shards, run_dir, "data.num_workers=2", trigger=metrics_step_reached(run_dir / "metrics.jsonl", step),
                      stop_signal=signal.SIGINT)
    assert stopped.killed and stopped.returncode == 130, context + stopped.output[-3000:]
    assert "Traceback" not in stopped.output and "KeyboardInterrupt" not in stopped.output, context + stopped.output
    (line,) = _error_lines(stopped.output)
    assert " interrupted at step " in line and line.endswith("; rerun the same command to resume"), context + line
    named = line.split("; last checkpoint ")[1].split(";")[0]
    latest = CheckpointManager(run_dir / "checkpoints", is_main=False).latest()
    assert named == (str(latest) if latest else "none"), context + line
    rerun = _launch(shards, run_dir, "data.num_workers=2")
    assert rerun.returncode == 0, context + rerun.output[-3000:]
    _assert_identical(reference, run_dir, context)


def test_truncated_newest_checkpoint_is_reported_and_the_previous_one_used(shards, reference, tmp_path):
    run_dir = _copy(reference, tmp_path / "run")
    newest = run_dir / "checkpoints" / f"ckpt-{STEPS:09d}.pt"
    with open(newest, "r+b") as f:
        f.truncate(newest.stat().st_size // 2)
    info = subprocess.run([sys.executable, "-m", "personvit", "ckpt", "info", str(run_dir)], capture_output=True,
                          text=True, env={**subprocess_env(), "COLUMNS": "400"}, timeout=120)
    assert info.returncode == 0, info.stdout + info.stderr
    assert "skipping unusable checkpoint" in info.stdout and f"{newest.name}: truncated" in info.stdout, info.stdout
    attempt = _launch(shards, run_dir)
    assert attempt.returncode == 0, attempt.output[-3000:]
    warning = [line for line in attempt.output.splitlines() if "WARNING" in line and newest.name in line]
    assert warning and "truncated" in warning[0] and f"ckpt-{STEPS - 2:09d}.pt" in warning[0], attempt.output[-3000:]
    _assert_identical(reference, run_dir)


# ----------------------------------------------------------------------------- full disk

CKPT_BYTES_ROUGH = 2_600_000  # one checkpoint of this recipe (~2.5 MB)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs with room for two checkpoints and a half: the third save runs out of space."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    size = int(2.4 * CKPT_BYTES_ROUGH)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                           text=True, timeout=30)
        reason = r.stderr.strip() or f"exit {r.returncode}"
    except (OSError, subprocess.SubprocessError) as e:
        r, reason = None, str(e)
    if r is None or r.returncode != 0:
        message = f"cannot mount a small tmpfs to fill ({reason}); needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_full_disk_during_a_checkpoint_is_one_line_and_resumes_exactly_after_freeing_space(
        shards, reference, small_tmpfs, tmp_path):
    run_dir = small_tmpfs / "run"
    full = _launch(shards, run_dir)
    assert full.returncode == 1, full.output[-3000:]
    assert "Traceback" not in full.output and "enforce fail" not in full.output, full.output[-3000:]
    (line,) = _error_lines(full.output)
    ckpts = run_dir / "checkpoints"
    committed = CheckpointManager(ckpts, is_main=False).committed()
    assert committed, full.output
    assert line == (f"personvit pretrain: error: cannot write {ckpts}/ckpt-000000006.pt: No space left on device; "
                    f"last complete checkpoint: {committed[-1]}"), line
    load_checkpoint(committed[-1])  # intact
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name], sorted(run_dir.rglob("*"))
    assert not (ckpts / "ckpt-000000006.pt").exists() and not (ckpts / "ckpt-000000006.commit").exists()
    # Free space the way a user would: move the run folder to a disk with room, rerun there.
    moved = _copy(run_dir, tmp_path / "moved")
    rerun = _launch(shards, moved)
    assert rerun.returncode == 0 and f"resumed from {moved}/checkpoints/{committed[-1].name}" in rerun.output, \
        rerun.output[-3000:]
    _assert_identical(reference, moved)


def test_full_disk_while_logging_metrics_names_the_file(small_tmpfs):
    with open(small_tmpfs / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
    metrics = MetricsLogger(small_tmpfs / "run" / "metrics.jsonl")
    with pytest.raises(WriteFailedError) as info:
        metrics.log(step=1, loss=1.0)
    assert str(info.value) == f"cannot write {small_tmpfs}/run/metrics.jsonl: No space left on device"
    assert not (small_tmpfs / "run" / "metrics.jsonl").exists() or (small_tmpfs / "run" / "metrics.jsonl").read_bytes() == b""

