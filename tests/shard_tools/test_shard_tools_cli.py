"""The `shard-tools` console script as users run it: Slurm array variables, one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from shard_tools.cli import main


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("shard-tools", path=os.path.dirname(sys.executable)) or "shard-tools"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_slurm_array_tasks_with_offset_ids_then_merge(tiny_synth, tmp_path, tree_bytes):
    args = ["pack", "market1501", str(tiny_synth), str(tmp_path / "arr"), "--maxcount", "9"]
    for task in ("1", "2"):  # sbatch --array=1-2: ids need not start at 0
        r = run(*args, env={"SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"})
        assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and (tmp_path / "arr" / "manifest.json").exists()
    r = run("merge", str(tmp_path / "arr"))
    assert r.returncode == 0 and "train" in r.stdout
    assert main(["pack", "market1501", str(tiny_synth), str(tmp_path / "one"), "--maxcount", "9", "--quiet"]) == 0
    assert tree_bytes(tmp_path / "arr") == tree_bytes(tmp_path / "one")


@pytest.mark.parametrize("argv,message", [
    (["pack", "market1501", "{tmp}/missing", "{tmp}/o"], "market1501: source folder {tmp}/missing does not exist"),
    (["pack", "msmt17", "{tmp}", "{tmp}/o"], "msmt17: expected train/ + test/ (V1)"),
    (["pack", "luperson", "{tmp}", "{tmp}/o", "--fraction", "0"], "--fraction must be in (0, 1]"),
    (["pack", "luperson", "{tmp}", "{tmp}/o", "--array-index", "1"], "give both --array-index and --array-count"),
    (["merge", "{tmp}"], "no .pack/plan.json"),
    (["info", "{tmp}"], "manifest.json not found"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, argv, message):
    r = run(*[a.format(tmp=tmp_path) for a in argv])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message.format(tmp=tmp_path) in r.stderr, r.stderr


@pytest.mark.parametrize("argv", [["--help"], *[[cmd, "--help"] for cmd in ("pack", "merge", "verify", "info", "synth")]])
def test_help_does_not_import_torch(argv):
    from tests.support.help_imports import help_run

    out = help_run("shard_tools.cli", argv)
    assert out["code"] == 0 and not out["torch"], out
    assert "usage: shard-tools" in out["stdout"]
