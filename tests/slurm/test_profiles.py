"""Cluster profiles and --dry-run: no Slurm needed (the dry run must work where sbatch does not exist)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from personvit.config.core import ConfigError
from slurm.profiles import PROFILE_DIR, load_profile
from slurm.submit import main as submit_main

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    recipe = tmp_path / "counter.yaml"
    recipe.write_text("steps: 4\nrun:\n  seed: 3\n")
    # PATH holds only the venv: no sbatch, sinfo or srun anywhere.
    env = {**os.environ, "PATH": str(VENV_BIN), "PYTHONPATH": str(REPO)}
    return subprocess.run([str(VENV_BIN / "personvit-submit"), "pretrain", str(recipe), "--dry-run",
                           "--entry", "tests.slurm.counter_job:main", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_dry_run_8x8_prints_expected_sbatch_lines_without_slurm(tmp_path):
    proc = _dry_run(tmp_path, "--cluster", "a100_8x8", "cluster.partition=gpu", "cluster.account=proj",
                    "cluster.qos=high", "steps=8")
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "runs" / "pretrain-%j"
    expected = [
        "#!/bin/bash",
        "#SBATCH --account=proj",
        "#SBATCH --cpus-per-task=10",
        f"#SBATCH --error={folder}/%j_0_log.err",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --hold",
        "#SBATCH --job-name=personvit-pretrain",
        "#SBATCH --mem=480GB",
        "#SBATCH --nodes=8",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={folder}/%j_0_log.out",
        "#SBATCH --partition=gpu",
        "#SBATCH --qos=high",
        "#SBATCH --signal=USR2@180",
        "#SBATCH --time=1440",
        "#SBATCH --wckey=submitit",
        "export SUBMITIT_EXECUTOR=slurm",
    ]
    lines = proc.stdout.splitlines()
    for line in expected:
        assert line in lines, f"missing {line!r} in:\n{proc.stdout}"
    sbatch_lines = [ln for ln in lines if ln.startswith("#SBATCH")]
    assert len(sbatch_lines) == len(expected) - 2, sbatch_lines  # nothing unexpected (no constraint/exclude)
    snapshot = [ln for ln in lines if ln.startswith("export PYTHONPATH=")]
    assert snapshot and str(tmp_path / "runs" / ".code") in snapshot[0]  # snapshot_code: true
    srun = [ln for ln in lines if ln.startswith("srun ")]
    assert len(srun) == 1 and re.fullmatch(
        rf"srun --unbuffered --output {folder}/%j_%t_log.out --error {folder}/%j_%t_log.err "
        rf"{VENV_BIN}/python\S* -P -u -m submitit.core._submit {folder}", srun[0]), srun
    # The resolved recipe follows the script, overrides applied; nothing was created.
    assert "steps: 8" in lines and "  seed: 3" in lines
    assert not (tmp_path / "runs").exists()


def test_dry_run_local_profile_has_no_sbatch(tmp_path):
    proc = _dry_run(tmp_path, "--cluster", "local")
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH" not in proc.stdout and "executor: local" in proc.stdout


@pytest.mark.parametrize("override, message", [
    ("cluster.gpus_per_node=9", "exceeds this cluster's max_gpus_per_node=8"),
    ("cluster.nodes=16", "exceeds this cluster's max_nodes=8"),
    ("cluster.partiton=gpu", "did you mean 'partition'"),
    ("cluster.tasks_per_node=4", "one task per GPU"),
])
def test_impossible_or_misspelled_requests_fail_before_submission(tmp_path, capsys, override, message):
    recipe = tmp_path / "counter.yaml"
    recipe.write_text("steps: 4\n")
    status = submit_main(["pretrain", str(recipe), "--cluster", "a100_8x8", "--entry", "tests.slurm.counter_job:main",
                          override])  # not a dry run: it must fail before reaching for sbatch
    err = capsys.readouterr().err
    assert status == 2 and message in err
    assert len(err.strip().splitlines()) == 1


def test_every_shipped_profile_loads_and_is_consistent():
    names = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
    assert {"a100_8x8", "local", "localhost_slurm"} <= set(names)
    for name in names:
        load_profile(name).check_request()
    big = load_profile("a100_8x8")
    assert big.world_size == 64 and big.gpus_per_node == 8


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown cluster profile 'a100'.*a100_8x8"):
        load_profile("a100")


def test_real_recipe_is_validated_before_submission(capsys):
    recipe = str(REPO / "configs/pretrain/tiny_cpu.yaml")
    assert submit_main(["pretrain", recipe, "--cluster", "a100_8x8", "--dry-run", "train.epochs=7"]) == 0
    printed = capsys.readouterr().out
    assert "#SBATCH --nodes=8" in printed and "  epochs: 7" in printed.splitlines()
    # A typo in the recipe fails on the login node, naming the key, with no sbatch involved.
    assert submit_main(["pretrain", recipe, "--cluster", "a100_8x8", "train.epoch=7"]) == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
