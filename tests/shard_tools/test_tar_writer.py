"""The lean tar writer: fixed metadata, no PAX headers, readable by tar, temp name until commit."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile

import pytest

from shard_tools.writer import BLOCK, ShardWriter, temp_path


def test_members_are_lean_and_fixed(tmp_path, jpeg):
    path = tmp_path / "train-000000.tar"
    samples = {f"k{i}": jpeg(i) for i in range(3)}
    with ShardWriter(path) as w:
        for k, data in samples.items():
            w.add(k, {"jpg": data, "json": b'{"pid":1}'})
        nbytes, sha = w.commit()
    raw = path.read_bytes()
    assert nbytes == len(raw) and sha == hashlib.sha256(raw).hexdigest()
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"k{i}.{e}" for i in range(3) for e in ("jpg", "json")]
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.pax_headers) == (0, 0, 0, "", "", {})
        assert tar.extractfile("k1.jpg").read() == samples["k1"]
    # headers + data rounded up to blocks + the end marker: nothing else (no PAX blocks)
    expected = sum(2 * BLOCK + -(-len(d) // BLOCK) * BLOCK + BLOCK for d in samples.values()) + 2 * BLOCK
    assert len(raw) == expected
    listing = subprocess.run(["tar", "tvf", str(path)], capture_output=True, text=True, check=True).stdout
    assert "k2.json" in listing


def test_long_names_use_gnu_longname_not_pax(tmp_path):
    path = tmp_path / "s.tar"
    key = "x" * 150
    with ShardWriter(path) as w:
        w.add(key, {"jpg": b"abc"})
        w.commit()
    with tarfile.open(path) as tar:
        (m,) = tar.getmembers()
        assert m.name == key + ".jpg" and m.pax_headers == {}
    assert b"././@LongLink" in path.read_bytes()[:BLOCK]


def test_output_is_only_visible_after_commit_and_failed_writes_leave_nothing(tmp_path):
    path = tmp_path / "s.tar"
    with pytest.raises(RuntimeError):
        with ShardWriter(path) as w:
            w.add("a", {"jpg": b"abc"})
            assert temp_path(path).exists() and not path.exists()
            raise RuntimeError("reader died")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["a.b", "a/b", ""])
def test_bad_keys_are_refused(tmp_path, key):
    with ShardWriter(tmp_path / "s.tar") as w, pytest.raises(ValueError, match="dots and slashes"):
        w.add(key, {"jpg": b"x"})
