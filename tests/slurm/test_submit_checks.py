"""What `personvit-submit` checks on the login node, before anything is queued (no Slurm needed)."""

from __future__ import annotations

import pytest

from slurm.submit import main as submit_main
from tests.support.help_imports import help_run
from tests.support.reid_data import REPO, sample, write_shard_set

FINETUNE = str(REPO / "configs/finetune/tiny_cpu.yaml")
PRETRAIN = str(REPO / "configs/pretrain/tiny_cpu.yaml")


@pytest.fixture
def shards(tmp_path):
    return write_shard_set(tmp_path / "set", {"train": [sample(f"t{i}", pid=i % 2, camid=i % 3, seed=i)
                                                        for i in range(4)]})


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_shards_without_a_manifest_are_refused_before_sbatch(tmp_path, capsys, kind):
    recipe = {"pretrain": PRETRAIN, "finetune": FINETUNE}[kind]
    missing = tmp_path / "not-packed"
    missing.mkdir()
    # Not a dry run, and the profile's Slurm does not exist here: the check must come first.
    assert submit_main([kind, recipe, "--cluster", "a100_8x8", f"data.shards={missing}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"personvit-submit {kind}: error: data.shards: {missing}/manifest.json not found: not a packed "
                   "shard folder (or the pack is unfinished)"], err


def test_dry_run_warns_and_still_prints_the_script(tmp_path, capsys):
    assert submit_main(["finetune", FINETUNE, "--cluster", "a100_8x8", "--dry-run",
                        f"data.shards={tmp_path / 'nowhere'}", f"model.init={tmp_path / 'no-run'}"]) == 0
    captured = capsys.readouterr()
    assert "#SBATCH --nodes=8" in captured.out
    assert captured.err.strip().splitlines() == [
        f"personvit-submit finetune: warning: data.shards: {tmp_path}/nowhere/manifest.json not found: not a packed "
        "shard folder (or the pack is unfinished)",
        f"personvit-submit finetune: warning: model.init: {tmp_path}/no-run does not exist",
    ]


def test_a_missing_model_init_is_refused_and_good_inputs_pass(tmp_path, capsys, shards):
    assert submit_main(["finetune", FINETUNE, "--cluster", "a100_8x8", f"data.shards={shards}",
                        f"model.init={tmp_path / 'no-run'}"]) == 2
    assert capsys.readouterr().err.strip() == (f"personvit-submit finetune: error: model.init: {tmp_path}/no-run "
                                               "does not exist")
    assert submit_main(["finetune", FINETUNE, "--cluster", "a100_8x8", "--dry-run", f"data.shards={shards}",
                        f"model.init={shards}"]) == 0
    assert capsys.readouterr().err == ""


def test_status_of_a_folder_that_is_not_a_run_is_an_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run\n")
    assert submit_main(["status", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"{tmp_path}: not a run folder (none of submission.json, config.yaml, metrics.jsonl, restarts.jsonl, "
        "checkpoints)"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 3}\n')
    assert submit_main(["status", str(run)]) == 0
    assert '"step": 3' in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], *[[cmd, "--help"] for cmd in
                                                ("pretrain", "finetune", "sweep", "pack", "status", "collect")]])
def test_help_does_not_import_torch(argv):
    out = help_run("slurm.submit", argv)
    assert out["code"] == 0 and not out["torch"], out
    assert "usage: personvit-submit" in out["stdout"]


def test_allow_change_reaches_the_engine_parser_on_every_start(tmp_path):
    from personvit import cli_args
    from slurm.jobs import TrainJob
    from slurm.submit import _parser

    args = _parser().parse_args(["pretrain", "r.yaml", "--cluster", "local", "--allow-change", "run.seed",
                                 "--allow-change", "optim.base_lr,loss.lambda2"])
    job = TrainJob("pretrain", "r.yaml", ["train.epochs=2"], allow_change=args.allow_change)
    engine = cli_args.parse("pretrain", job.argv(tmp_path / "run"))
    assert engine.overrides == ["train.epochs=2", f"run.dir={tmp_path / 'run'}"]
    assert engine.allow_change == ["run.seed,optim.base_lr,loss.lambda2"]
    assert cli_args.parse("pretrain", TrainJob("pretrain", "r.yaml").argv(tmp_path)).allow_change is None
