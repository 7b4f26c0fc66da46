"""`personvit-submit pack` on the local Slurm: an array of `shard-tools pack` tasks, then a merge job."""

from __future__ import annotations

import json

import pytest

from shard_tools.cli import main as shard_tools
from slurm.submit import main as submit_main

pytestmark = pytest.mark.slurm


def test_pack_array_then_merge_matches_single_process_pack(slurm, synth_shards, tmp_path, capsys):
    out = tmp_path / "market-array"
    status = submit_main(["pack", "market1501", str(synth_shards["raw"]), str(out), "--array-count", "2",
                          "--pack-args", "--maxcount 100", "--cluster", "localhost_slurm", "--wait"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "submitted pack array" in printed and printed.count(": completed") == 3  # 2 tasks + merge
    assert shard_tools(["verify", str(out)]) == 0
    ours = json.loads((out / "manifest.json").read_text())
    single = json.loads((synth_shards["market"] / "manifest.json").read_text())
    assert ours["splits"].keys() == single["splits"].keys() == {"train", "query", "gallery"}
    for split in ours["splits"]:
        assert ours["splits"][split]["samples"] == single["splits"][split]["samples"] > 0
    assert not list(out.glob("*.log*")), "logs must stay out of the shard folder"
    assert list((tmp_path / "market-array.logs").glob("*/*_log.out"))


def test_pack_dry_run_lists_the_tasks(tmp_path, capsys):
    status = submit_main(["pack", "luperson", str(tmp_path / "raw"), str(tmp_path / "out"), "--array-count", "3",
                          "--cluster", "a100_8x8", "--dry-run"])
    printed = capsys.readouterr().out
    assert status == 0
    assert printed.count("--array-count 3") == 3 and "--array-index 2 --array-count 3" in printed
    assert "#SBATCH --array=0-2%3" in printed
    assert not (tmp_path / "out").exists()
