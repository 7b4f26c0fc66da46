"""The one tar reader: members in order, and a truncated shard named by each of its three users."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from personvit.data.reid import read_reid_split
from personvit.data.shards import ShardError, index_tar
from personvit.data.tar_reader import TarReadError, iter_members, read_samples
from shard_tools.verify import verify_shard
from tests.support.reid_data import sample, write_shard_set


def _set(tmp_path: Path) -> Path:
    return write_shard_set(tmp_path / "set", {"train": [sample(f"s{i}", pid=i, camid=0, seed=i) for i in range(3)]})


def test_members_and_samples_in_file_order(tmp_path: Path) -> None:
    tar = _set(tmp_path) / "train-000000.tar"
    members = list(iter_members(tar))
    assert [(m.key, m.ext) for m in members] == [(f"s{i}", e) for i in range(3) for e in ("jpg", "json")]
    assert all(m.is_file and m.data is None for m in members)
    samples = read_samples(tar)
    raw = tar.read_bytes()
    assert list(samples) == ["s0", "s1", "s2"]
    assert all(raw[m.offset:m.offset + m.size] == samples[m.key][m.ext] for m in members)


def test_a_truncated_shard_is_named_by_every_reader(tmp_path: Path) -> None:
    root = _set(tmp_path)
    tar = root / "train-000000.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(TarReadError, match=r"train-000000\.tar: unreadable tar"):
        list(iter_members(tar))
    with pytest.raises(ShardError, match=r"train-000000\.tar: unreadable tar"):
        index_tar(tar)
    with pytest.raises(ShardError, match=r"train-000000\.tar: unreadable tar"):
        read_reid_split(root, "train")
    problem = verify_shard(tar, 3, tar.stat().st_size, hashlib.sha256(tar.read_bytes()).hexdigest())
    assert problem is not None and problem.startswith("train-000000.tar: unreadable tar (ReadError: "), problem
