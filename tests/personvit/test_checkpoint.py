"""CheckpointManager: atomic writes, retention, fallback, SIGKILL safety; `personvit ckpt`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from personvit.checkpoint import (
    CheckpointError,
    CheckpointManager,
    compare_checkpoints,
    load_checkpoint,
    resolve_checkpoint_path,
)
from personvit.cli import main as cli_main
from personvit.config.core import ConfigError, load_config
from personvit.config.pretrain import PretrainConfig
from personvit.config.sections import CheckpointConfig


def _state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(3, dtype=torch.bfloat16)},
        "optimizer": {"state": {0: {"exp_avg": torch.randn(3, generator=g)}}, "param_groups": [{"lr": 0.1}]},
        "loader": {"epoch": 1, "next_batch": 7},
        "rng": torch.get_rng_state(),
        "ema_momentum": 0.996,
        "note": None,
    }


def test_round_trip_and_weights_only(tmp_path):
    mgr = CheckpointManager(tmp_path)
    state = _state()
    path = mgr.save(state, step=5, epoch=1)
    assert path.name == "ckpt-000000005.pt" and (tmp_path / "ckpt-000000005.commit").exists()
    loaded = mgr.load_latest()
    assert loaded["step"] == 5 and loaded["epoch"] == 1
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["optimizer"]["state"][0]["exp_avg"].shape == (3,)
    assert loaded["loader"] == {"epoch": 1, "next_batch": 7}


def test_keep_last_and_keep_forever(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2, keep_every_epochs=2)
    step = 0
    for epoch in range(1, 6):
        for _ in range(2):
            step += 1
            mgr.save(_state(step), step=step, epoch=epoch - 1)
        step += 1
        mgr.save(_state(step), step=step, epoch=epoch, end_of_epoch=True)
    names = sorted(p.name for p in mgr.committed())
    # the last two, plus end-of-epoch 2 (step 6) and 4 (step 12), kept forever
    assert names == ["ckpt-000000006.pt", "ckpt-000000012.pt", "ckpt-000000014.pt", "ckpt-000000015.pt"]
    assert not list(tmp_path.glob("*.tmp*"))
    assert mgr.latest().name == "ckpt-000000015.pt"


def test_keep_last_must_be_at_least_two(tmp_path):
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=1)


def test_from_config_equals_the_explicit_form(tmp_path):
    cfg = CheckpointConfig(every_steps=5, keep_last=3, keep_every_epochs=4)
    built = CheckpointManager.from_config(cfg, tmp_path, is_main=False)
    explicit = CheckpointManager(tmp_path / "checkpoints", keep_last=3, keep_every_epochs=4, is_main=False)
    assert vars(built) == vars(explicit)


@pytest.mark.parametrize("override", ["checkpoint.keep_last=1", "checkpoint.keep_every_epochs=-1"])
def test_bad_retention_refused_in_one_line(override):
    key = override.split("=")[0].split(".")[1]
    with pytest.raises(ConfigError) as exc:
        load_config(PretrainConfig, None, ["data.shards=/s", override])
    assert key in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ValueError, match=key):  # the explicit form applies the same rule
        CheckpointManager("/nonexistent", **{key: int(override.split("=")[1])})


def test_truncated_latest_falls_back(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path)
    mgr.save(_state(1), step=1, epoch=0)
    mgr.save(_state(2), step=2, epoch=0)
    newest = mgr.latest()
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # truncation after commit (disk trouble, manual copy)
    loaded = mgr.load_latest()
    assert loaded["step"] == 1  # marker size mismatch -> skipped -> previous complete one


class _Warnings(logging.Handler):
    """The checkpoint module's warnings (the `personvit` loggers do not propagate to pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def warnings_of_checkpoint():
    handler = _Warnings()
    logger = logging.getLogger("personvit.checkpoint")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def test_fallbacks_are_reported_naming_the_file_and_why(tmp_path, warnings_of_checkpoint):
    mgr = CheckpointManager(tmp_path)
    for step in (1, 2, 3):
        mgr.save(_state(step), step=step, epoch=0)
    newest = tmp_path / "ckpt-000000003.pt"
    size = newest.stat().st_size
    newest.write_bytes(newest.read_bytes()[:100])
    (tmp_path / "ckpt-000000004.pt").write_bytes(b"killed before its marker")
    assert mgr.load_latest()["step"] == 2
    assert warnings_of_checkpoint == [
        f"skipping unusable checkpoint {tmp_path}/ckpt-000000004.pt: no commit marker (its write was interrupted); "
        f"resuming from {tmp_path}/ckpt-000000002.pt",
        f"skipping unusable checkpoint {newest}: truncated: 100 of {size} bytes; "
        f"resuming from {tmp_path}/ckpt-000000002.pt",
    ]
    assert mgr.unusable_newer(tmp_path / "ckpt-000000004.pt") == []


def test_latest_finite_skips_checkpoints_holding_non_finite_weights(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(_state(1), step=1, epoch=0)
    bad = _state(2)
    bad["optimizer"]["state"][0]["exp_avg"][1] = float("inf")
    mgr.save(bad, step=2, epoch=0)
    assert mgr.latest().name == "ckpt-000000002.pt"
    assert mgr.latest_finite().name == "ckpt-000000001.pt"


def test_corrupt_but_same_size_falls_back_with_warning(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(_state(1), step=1, epoch=0)
    mgr.save(_state(2), step=2, epoch=0)
    newest = mgr.latest()
    size = newest.stat().st_size
    newest.write_bytes(b"\0" * size)
    loaded = mgr.load_latest()
    assert loaded["step"] == 1


def test_foreign_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a personvit checkpoint"):
        load_checkpoint(foreign)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "personvit-checkpoint", "x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(evil)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)


def test_sigkill_while_writing_leaves_latest_loadable(tmp_path):
    """A writer SIGKILLed at random moments never leaves `latest` pointing at a broken file."""
    script = textwrap.dedent(
        f"""
        import torch, sys
        from personvit.checkpoint import CheckpointManager
        mgr = CheckpointManager({str(tmp_path)!r}, keep_last=2)
        step = 0
        while True:
            step += 1
            # ~8 MB per checkpoint so that the kill often lands mid-write
            mgr.save({{"w": torch.full((2_000_000,), float(step)), "step_copy": step}}, step=step, epoch=0)
            print(step, flush=True)
        """
    )
    for delay in (0.35, 0.6, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        # wait for at least one completed save before killing
        first = proc.stdout.readline()
        assert first.strip(), "writer produced no checkpoint"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded = CheckpointManager(tmp_path).load_latest()
        assert loaded is not None
        assert loaded["step_copy"] == loaded["step"]
        assert torch.all(loaded["w"] == float(loaded["step"]))


def test_compare_detects_one_ulp(tmp_path, capsys):
    a = CheckpointManager(tmp_path / "a")
    b = CheckpointManager(tmp_path / "b")
    a.save(_state(0), step=3, epoch=0)
    b.save(_state(0), step=3, epoch=0)
    assert compare_checkpoints(tmp_path / "a", tmp_path / "b") is None
    assert cli_main(["ckpt", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0

    bumped = _state(0)
    w = bumped["model"]["w"]
    w.view(-1)[5] = torch.nextafter(w.view(-1)[5], torch.tensor(float("inf")))
    c = CheckpointManager(tmp_path / "c")
    c.save(bumped, step=3, epoch=0)
    diff = compare_checkpoints(tmp_path / "a", tmp_path / "c")
    assert diff is not None and "model.w" in diff and "index 5" in diff
    assert cli_main(["ckpt", "compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "model.w" in capsys.readouterr().out

    counter = _state(0)
    counter["loader"]["next_batch"] = 8
    d = CheckpointManager(tmp_path / "d")
    d.save(counter, step=3, epoch=0)
    assert "loader.next_batch" in compare_checkpoints(tmp_path / "a", tmp_path / "d")

    signed = _state(0)
    signed["model"]["b"] = -signed["model"]["b"]  # -0.0 vs 0.0: equal as numbers, not bitwise
    e = CheckpointManager(tmp_path / "e")
    e.save(signed, step=3, epoch=0)
    assert "model.b" in compare_checkpoints(tmp_path / "a", tmp_path / "e")


def test_ckpt_info_cli(tmp_path, capsys):
    CheckpointManager(tmp_path / "checkpoints").save(_state(0), step=9, epoch=2)
    assert cli_main(["ckpt", "info", str(tmp_path)]) == 0  # run folder -> its latest
    out = capsys.readouterr().out
    assert "step 9" in out and "model" in out
    assert cli_main(["ckpt", "info", str(tmp_path / "missing")]) == 2


def test_resolving_a_run_folder_reports_a_newer_unusable_checkpoint(tmp_path, warnings_of_checkpoint):
    """`model.init=<run>` and `weights=<run>` fall back as a resume does, and say so."""
    mgr = CheckpointManager(tmp_path / "checkpoints")
    for step in (1, 2):
        mgr.save(_state(step), step=step, epoch=0)
    assert resolve_checkpoint_path(tmp_path) == tmp_path / "checkpoints" / "ckpt-000000002.pt"
    assert warnings_of_checkpoint == []
    newest = tmp_path / "checkpoints" / "ckpt-000000002.pt"
    size = newest.stat().st_size
    newest.write_bytes(newest.read_bytes()[:100])  # edited or cut short after its commit
    previous = tmp_path / "checkpoints" / "ckpt-000000001.pt"
    assert resolve_checkpoint_path(tmp_path) == previous
    assert warnings_of_checkpoint == [
        f"skipping unusable checkpoint {newest}: truncated: 100 of {size} bytes; using {previous}"
    ]
    warnings_of_checkpoint.clear()
    newest.write_bytes(b"x" * (size + 7))  # rewritten in place, e.g. edited weights saved over it
    assert resolve_checkpoint_path(tmp_path) == previous
    assert warnings_of_checkpoint == [
        f"skipping unusable checkpoint {newest}: changed after its commit: {size + 7} bytes, its marker "
        f"says {size}; using {previous}"
    ]
