"""Labeled ReID splits read from real tar shards (made by shard-tools, or by hand to break them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from personvit.data.reid import ReIDTestDataset, ReIDTrainDataset, read_reid_split, relabel
from personvit.data.reid_transforms import EvalTransform, TrainTransform
from personvit.data.shards import ShardError
from tests.support.reid_data import jpeg_bytes, reid_shards, sample, write_shard_set

MARKET_NAME = re.compile(r"^(-?\d+)_c(\d)s\d_\d+_\d+\.jpg$")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return reid_shards(tmp_path_factory)


def test_splits_match_manifest_and_plain_webdataset(shards: Path) -> None:
    manifest = json.loads((shards / "manifest.json").read_text())
    for name in ("train", "query", "gallery"):
        split = read_reid_split(shards, name)
        assert len(split) == manifest["splits"][name]["samples"] and split.skipped == 0
        assert len(split.keys) == len(set(split.keys)) == len(split.pids) == len(split.camids) == len(split.paths)
        # Same samples, labels and bytes as a plain webdataset reader sees.
        urls = [str(shards / s["name"]) for s in manifest["splits"][name]["shards"]]
        ref = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}
        assert set(ref) == set(split.keys)
        for i, key in enumerate(split.keys):
            meta = json.loads(ref[key]["json"])
            assert (meta["pid"], meta["camid"]) == (split.pids[i], split.camids[i])
            assert ref[key]["jpg"] == split.images[i]


def test_labels_follow_market_file_names(shards: Path) -> None:
    gallery = read_reid_split(shards, "gallery")
    for pid, camid, path in zip(gallery.pids, gallery.camids, gallery.paths):
        m = MARKET_NAME.match(Path(path).name)
        assert m is not None, path
        assert int(m.group(1)) == pid and int(m.group(2)) - 1 == camid
    assert (gallery.pids == 0).any(), "synthetic gallery should hold distractors (pid 0)"
    assert not (gallery.pids == -1).any(), "junk (pid -1) is dropped by the packer"


def test_relabel_is_contiguous_and_invertible() -> None:
    pids = np.array([7, 3, 7, 1500, 3, 42])
    labels, unique = relabel(pids)
    assert labels.tolist() == [1, 0, 1, 3, 0, 2]
    assert (unique[labels] == pids).all()


def test_bad_samples_are_counted_and_skipped(tmp_path: Path, caplog) -> None:
    good = [sample(f"s{i}", pid=i % 3, camid=i % 2, seed=i) for i in range(5)]
    bad = [
        ("nojson", {"jpg": jpeg_bytes(9)}),
        ("badjson", {"jpg": jpeg_bytes(10), "json": b"{not json"}),
        ("strpid", {"jpg": jpeg_bytes(11), "json": b'{"pid": "3", "camid": 0}'}),
        ("badjpg", {"jpg": b"\xff\xd8 definitely not a jpeg", "json": b'{"pid": 1, "camid": 0}'}),
    ]
    root = write_shard_set(tmp_path / "set", {"train": good[:2] + bad + good[2:]})
    with caplog.at_level("WARNING"):
        split = read_reid_split(root, "train")
    assert split.keys == [k for k, _ in good]
    assert split.skipped == 4
    assert split.skip_reasons == {"missing jpg or json member": 1, "bad json metadata": 2, "unreadable image": 1}
    assert "skipped 4" in caplog.text and "nojson" in caplog.text


def test_missing_split_and_count_mismatch_name_the_culprit(tmp_path: Path) -> None:
    root = write_shard_set(tmp_path / "set", {"train": [sample("a", 1, 0, 0), sample("b", 2, 0, 1)]})
    with pytest.raises(ShardError, match="no split 'query'"):
        read_reid_split(root, "query")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["samples"] = 3
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"train-000000\.tar: manifest lists 3 samples, the tar holds 2"):
        read_reid_split(root, "train")
    with pytest.raises(ShardError, match="no manifest.json"):
        read_reid_split(tmp_path / "nowhere", "train")


def test_datasets_return_transformed_samples(shards: Path) -> None:
    split = read_reid_split(shards, "train")
    labels, _ = relabel(split.pids)
    train = ReIDTrainDataset(split, labels, TrainTransform((64, 32), seed=0, pad=4))
    img, label, camid = train[(2, 17, 5)]
    assert img.shape == (3, 64, 32) and img.dtype == torch.float32
    assert label == labels[5] and camid == split.camids[5]
    assert torch.equal(img, train[(2, 17, 5)][0]), "same (epoch, position, index) must give the same tensor"
    test = ReIDTestDataset(split, EvalTransform((64, 32)))
    x, idx = test[3]
    assert idx == 3 and x.shape == (3, 64, 32) and -1.0 <= x.min() and x.max() <= 1.0
