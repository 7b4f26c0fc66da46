"""`verify` catches truncated, modified, missing and stray shards; `info` reports the set."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console

from shard_tools.cli import main
from shard_tools.info import print_info
from shard_tools.pack import pack


@pytest.fixture
def packed(tiny_synth, tmp_path):
    out = tmp_path / "s"
    pack("market1501", tiny_synth, out, maxcount=10, progress=False)
    return out


def test_clean_set_verifies(packed, capsys):
    assert main(["verify", str(packed), "--workers", "2"]) == 0
    assert "all" in capsys.readouterr().out


def test_truncated_shard_fails_naming_it(packed, capsys):
    p = packed / "train-000001.tar"
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size - 1024)
    assert main(["verify", str(packed)]) == 1
    err = capsys.readouterr().err
    assert "BAD train-000001.tar:" in err and "1 bad shard(s)" in err


def test_modified_shard_same_size_fails_on_sha256(packed, capsys):
    p = packed / "gallery-000000.tar"
    data = bytearray(p.read_bytes())
    data[2000] ^= 0xFF
    p.write_bytes(bytes(data))
    assert main(["verify", str(packed)]) == 1
    assert "BAD gallery-000000.tar: sha256 mismatch" in capsys.readouterr().err


def test_undecodable_member_is_caught_even_when_manifest_agrees(packed, capsys):
    # rewrite shard + manifest consistently, but with a broken JPEG inside: only the decode can tell
    import hashlib
    import json

    p = packed / "query-000000.tar"
    data = bytearray(p.read_bytes())
    data[512 + 400: 512 + 1400] = b"\x00" * 1000  # inside the first jpg's scan data
    p.write_bytes(bytes(data))
    m = json.loads((packed / "manifest.json").read_text())
    entry = m["splits"]["query"]["shards"][0]
    entry["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (packed / "manifest.json").write_text(json.dumps(m))
    assert main(["verify", str(packed)]) == 1
    err = capsys.readouterr().err
    assert "BAD query-000000.tar: query_" in err and ".jpg does not decode" in err


def test_missing_and_stray_shards(packed, capsys):
    (packed / "train-000000.tar").rename(packed / "train-999999.tar")
    assert main(["verify", str(packed)]) == 1
    err = capsys.readouterr().err
    assert "BAD train-000000.tar: missing" in err and "BAD train-999999.tar: not listed in the manifest" in err


def test_not_a_shard_folder_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "shard_tools", "verify", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "manifest.json not found" in r.stderr


def test_info_table(packed, tiny_synth):
    buf = io.StringIO()
    m = print_info(packed, Console(file=buf, width=120))
    text = buf.getvalue()
    for split in ("train", "query", "gallery"):
        s = m["splits"][split]
        row = next(line for line in text.splitlines() if f" {split} " in line)
        assert f"{s['samples']:,}" in row and f" {s['num_ids']} " in row and f" {s['num_shards']} " in row
    assert m["splits"]["train"]["num_cams"] == 3
    assert "dropped" in text and "junk (pid -1)" in text
