"""The output folder is a contract: pack never mixes its shards into files it did not write."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from shard_tools.pack import pack


def pack_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shard_tools", "pack", *args, "--quiet"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, hidden pack state included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_holding_another_pack_is_refused_and_left_untouched(tiny_synth, tmp_path):
    out = tmp_path / "out"
    pack("market1501", tiny_synth, out, maxcount=5, progress=False)
    before = tree_hashes(out)
    r = pack_cli("market1501", str(tiny_synth), str(out), "--maxcount", "8")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"shard-tools pack: error: {out}: holds .pack/ (state of a different pack), "
                               "gallery-000000.tar"), lines[0]
    assert lines[0].endswith("(not written by an unfinished pack of this source); use --overwrite to replace them")
    assert tree_hashes(out) == before


def test_overwrite_replaces_the_old_set_completely(tiny_synth, tmp_path, tree_bytes):
    out = tmp_path / "out"
    pack("market1501", tiny_synth, out, maxcount=5, progress=False)  # more shards than the new set has
    r = pack_cli("market1501", str(tiny_synth), str(out), "--maxcount", "8", "--overwrite")
    assert r.returncode == 0, r.stderr
    pack("market1501", tiny_synth, tmp_path / "clean", maxcount=8, progress=False)
    assert tree_hashes(out) == tree_hashes(tmp_path / "clean")  # no shard of the old set left over
    assert tree_bytes(out)


def test_a_lone_manifest_or_shard_is_refused(tiny_synth, tmp_path):
    done = tmp_path / "done"
    pack("market1501", tiny_synth, done, maxcount=8, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(done / "manifest.json", out)
    shutil.copy(done / "train-000000.tar", out)
    before = tree_hashes(out)
    r = pack_cli("market1501", str(tiny_synth), str(out), "--maxcount", "8")
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert f"{out}: holds manifest.json, train-000000.tar (not written by an unfinished pack" in r.stderr
    assert tree_hashes(out) == before


def test_overwrite_never_deletes_files_that_are_not_shards(tiny_synth, tmp_path):
    out = tmp_path / "out"
    pack("market1501", tiny_synth, out, maxcount=5, progress=False)
    (out / "notes.txt").write_text("my notes\n")
    (out / "figures").mkdir()
    before = tree_hashes(out)
    r = pack_cli("market1501", str(tiny_synth), str(out), "--maxcount", "8", "--overwrite")
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert "holds figures/, notes.txt, which are not part of a shard set" in r.stderr
    assert tree_hashes(out) == before


def test_an_empty_folder_is_fine_and_a_finished_pack_reruns_as_a_no_op(tiny_synth, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert pack_cli("market1501", str(tiny_synth), str(out), "--maxcount", "8").returncode == 0
    before = tree_hashes(out)
    r = pack_cli("market1501", str(tiny_synth), str(out), "--maxcount", "8")
    assert r.returncode == 0, r.stderr
    assert tree_hashes(out) == before


def test_a_pack_of_zero_samples_is_an_error(tmp_path, jpeg):
    src = tmp_path / "lup"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"")
    (src / "b.jpg").write_bytes(jpeg(1)[:400])
    r = pack_cli("luperson", str(src), str(tmp_path / "out"))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith(f"shard-tools pack: error: packed 0 samples into {tmp_path / 'out'}: "
                                "all 2 listed image(s) were skipped (first: "), r.stderr
