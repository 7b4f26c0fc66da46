"""`personvit CMD --help` and usage errors answer without importing torch (the training stack)."""

from __future__ import annotations

import pytest

from personvit.cli import COMMANDS
from personvit.cli_args import PARSERS
from tests.support.help_imports import help_run


def test_every_command_has_a_torch_free_parser():
    assert set(PARSERS) == set(COMMANDS)


@pytest.mark.parametrize("argv", [["--help"], *[[cmd, "--help"] for cmd in COMMANDS],
                                  ["visualize", "attention", "--help"], ["ckpt", "compare", "--help"]])
def test_help_does_not_import_torch(argv):
    out = help_run("personvit.cli", argv)
    assert out["code"] in (0, None), out
    assert not out["torch"], f"`personvit {' '.join(argv)}` imported torch"
    assert "usage:" in out["stdout"]


def test_training_commands_take_allow_change():
    for cmd in ("pretrain", "finetune"):
        args = PARSERS[cmd]().parse_args(["r.yaml", "a=1", "--allow-change", "optim.lr,train.epochs"])
        assert args.allow_change == ["optim.lr,train.epochs"] and args.overrides == ["a=1"]
        assert PARSERS[cmd]().parse_args(["r.yaml"]).allow_change is None


def test_a_usage_error_does_not_import_torch():
    out = help_run("personvit.cli", ["evaluate", "cfg.yaml", "--no-such-flag"])
    assert out["code"] == 2 and not out["torch"], out
