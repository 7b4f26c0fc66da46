"""Faults during a pack end in one line: a full disk (a real, small tmpfs) and Ctrl-C (a real SIGINT)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shard_tools.pack import pack
from tests.support.waiting import wait_for


def pack_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shard_tools", "pack", "luperson", str(src), str(out), "--maxcount", "6",
            "--no-shuffle", "--quiet", *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def tree_bytes_all(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*.tmp-*")]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs of 64 KiB mounted in the test's folder (root only), unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        reason = f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def lup(tiny_synth, tmp_path) -> Path:
    src = tmp_path / "lup"
    shutil.copytree(tiny_synth / "unlabeled", src)
    return src


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_is_one_line_then_a_rerun_with_space_finishes(lup, small_tmpfs, tmp_path, workers):
    clean = tmp_path / "clean"
    pack("luperson", lup, clean, maxcount=6, shuffle_train=False, progress=False)
    need = sum(p.stat().st_size for p in clean.rglob("*") if p.is_file())
    assert need > 3 * 64 * 1024, "the set must not fit the small tmpfs"
    out = small_tmpfs / "out"
    r = run(pack_cmd(lup, out, "--workers", str(workers)))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    # The culprit is a file in the folder (a shard or the pack's state), named with the OS's reason.
    assert re.match(rf"shard-tools pack: error: cannot write {re.escape(str(out))}/\S+: No space left on device; "
                    r"\d+ of 10 shard\(s\) finished and kept", lines[0]), lines[0]
    assert lines[0].endswith("rerun the same command to resume"), lines[0]
    assert not temporaries(out), "a failed write must leave no temporary file"
    assert not (out / "manifest.json").exists()
    subprocess.run(["mount", "-o", f"remount,size={2 * need // 1024 + 1024}k", str(small_tmpfs)], check=True)
    r = run(pack_cmd(lup, out, "--workers", str(workers)))
    assert r.returncode == 0, r.stderr
    verified = run([sys.executable, "-m", "shard_tools", "verify", str(out)])
    assert verified.returncode == 0, verified.stderr
    assert tree_bytes_all(out) == tree_bytes_all(clean)


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_is_one_line_exit_130_and_a_rerun_resumes(lup, tmp_path, workers):
    # One input is a named pipe: the packer blocks on it mid-shard, after earlier shards are written.
    names = sorted(p.name for p in lup.iterdir())
    blocker = lup / names[len(names) // 2]
    saved = blocker.read_bytes()
    blocker.unlink()
    os.mkfifo(blocker)
    out = tmp_path / "out"
    # A new session, and SIGINT to its whole process group: what a terminal's Ctrl-C does.
    proc = subprocess.Popen(pack_cmd(lup, out, "--workers", str(workers)), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for("a shard blocked mid-write", lambda: any(out.glob(".train-000005.tar.tmp-*")))
        wait_for("two finished shards", lambda: len(list((out / ".pack" / "shards").glob("*.json"))) >= 2)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert lines[0].startswith("shard-tools pack: interrupted; ") and "shard(s) finished and kept" in lines[0]
    assert lines[0].endswith("rerun the same command to resume"), lines[0]
    assert not temporaries(out)
    blocker.unlink()
    blocker.write_bytes(saved)
    r = run(pack_cmd(lup, out, "--workers", str(workers)))
    assert r.returncode == 0, r.stderr
    pack("luperson", lup, tmp_path / "clean", maxcount=6, shuffle_train=False, progress=False)
    assert tree_bytes_all(out) == tree_bytes_all(tmp_path / "clean")
