"""Every source parser on tiny fixtures made here: splits, pid/camid, drops, skips, layout errors."""

from __future__ import annotations

import pickle

import pytest

from shard_tools.sources import SourceError, open_source
from shard_tools.sources.base import UNLABELED


def by_path(listing):
    return {r.path: r for r in listing.records}


def test_market1501_splits_pids_cameras_junk_and_distractors(tmp_path, files):
    root = tmp_path / "Market-1501-v15.09.15"
    files(root, ["bounding_box_train/0002_c1s1_000451_03.jpg", "bounding_box_train/0007_c6s2_003456_01.jpg",
                 "query/0002_c3s1_000551_00.jpg",
                 "bounding_box_test/0002_c2s1_000100_01.jpg", "bounding_box_test/0000_c1s1_000001_00.jpg",
                 "bounding_box_test/-1_c5s1_000002_00.jpg", "bounding_box_test/Thumbs.db"])
    src = open_source("market1501", tmp_path)  # the parent folder is accepted too
    assert src.root == root
    lst = src.list()
    recs = by_path(lst)
    r = recs["bounding_box_train/0007_c6s2_003456_01.jpg"]
    assert (r.split, r.pid, r.camid) == ("train", 7, 5)
    assert recs["query/0002_c3s1_000551_00.jpg"].split == "query"
    assert recs["bounding_box_test/0000_c1s1_000001_00.jpg"].pid == 0  # distractor kept in the gallery
    assert recs["bounding_box_test/0000_c1s1_000001_00.jpg"].split == "gallery"
    assert not any(r.pid == -1 for r in lst.records)
    assert lst.dropped == {"junk (pid -1)": 1}
    assert [(s.path, s.reason) for s in lst.skipped] == [
        ("bounding_box_test/Thumbs.db", "name does not match the market1501 pattern")]


@pytest.mark.parametrize("name,folder", [("dukemtmc", "DukeMTMC-reID"), ("occluded-duke", "Occluded_Duke")])
def test_duke_layouts(tmp_path, files, name, folder):
    root = tmp_path / folder
    files(root, ["bounding_box_train/0001_c2_f0046182.jpg", "query/0005_c8_f0000001.jpg",
                 "bounding_box_test/0005_c9_f0000002.jpg", "bounding_box_test/0006_c1_f0000003.jpg"])
    lst = open_source(name, root).list()
    recs = by_path(lst)
    assert (recs["bounding_box_train/0001_c2_f0046182.jpg"].pid, recs["bounding_box_train/0001_c2_f0046182.jpg"].camid) == (1, 1)
    assert recs["query/0005_c8_f0000001.jpg"].camid == 7
    assert [s.reason for s in lst.skipped] == ["camera 9 outside 1..8"]


@pytest.mark.parametrize("version,train_dir,test_dir", [("V1", "train", "test"), ("V2", "mask_train_v2", "mask_test_v2")])
def test_msmt17_lists_train_plus_val(tmp_path, files, version, train_dir, test_dir):
    root = tmp_path / f"MSMT17_{version}"
    files(root, [f"{train_dir}/0000/0000_000_01_0303morning_0015_0.jpg", f"{train_dir}/0001/0001_011_15_0303noon_0001_1.jpg",
                 f"{test_dir}/0000/0000_000_05_0303morning_0020_0.jpg", f"{test_dir}/0000/0000_001_07_0303morning_0021_0.jpg"])
    (root / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n")
    (root / "list_val.txt").write_text("0001/0001_011_15_0303noon_0001_1.jpg 1\n\n")
    (root / "list_query.txt").write_text("0000/0000_000_05_0303morning_0020_0.jpg 0\nbroken-line\n")
    (root / "list_gallery.txt").write_text("0000/0000_001_07_0303morning_0021_0.jpg 0\n")
    src = open_source("msmt17", tmp_path)
    assert src.version == version
    lst = src.list()
    train = [r for r in lst.records if r.split == "train"]
    assert [(r.pid, r.camid) for r in train] == [(0, 0), (1, 14)]  # train + val merged, camera 15 -> 14
    assert train[1].path == f"{train_dir}/0001/0001_011_15_0303noon_0001_1.jpg"
    assert [(r.split, r.camid) for r in lst.records if r.split != "train"] == [("query", 4), ("gallery", 6)]
    assert len(lst.skipped) == 1 and lst.skipped[0].path == "list_query.txt:2"
    assert src.read(train[0].path)[:2] == b"\xff\xd8"


def test_luperson_folder_with_and_without_images_subdir(tmp_path, files):
    files(tmp_path / "a" / "images", ["v1/0001.jpg", "v1/0002.jpg", "v0/0003.jpg", ".DS_Store"])
    lst = open_source("luperson", tmp_path / "a").list()
    assert [r.path for r in lst.records] == ["images/v0/0003.jpg", "images/v1/0001.jpg", "images/v1/0002.jpg"]
    assert all(r.pid == UNLABELED and r.split == "train" for r in lst.records)
    files(tmp_path / "b", ["x.jpg", "y.jpg"])
    assert [r.path for r in open_source("luperson", tmp_path / "b").list().records] == ["x.jpg", "y.jpg"]


def test_luperson_lmdb_keys_pkl_and_cursor(tmp_path, jpeg):
    lmdb = pytest.importorskip("lmdb", reason="the optional `lmdb` package is not installed")
    db = tmp_path / "lup" / "lmdb"
    db.mkdir(parents=True)
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(5):
            txn.put(f"img_{i}".encode(), jpeg(i))
    env.close()
    # cursor order (sorted keys) without keys.pkl
    src = open_source("luperson", tmp_path / "lup")
    assert [r.path for r in src.list().records] == [f"img_{i}" for i in range(5)]
    # keys.pkl (release order, bytes keys) takes precedence
    (tmp_path / "lup" / "keys.pkl").write_bytes(pickle.dumps([b"img_3", b"img_0"]))
    src = open_source("luperson", tmp_path / "lup")
    assert [r.path for r in src.list().records] == ["img_3", "img_0"]
    assert src.read("img_3") == jpeg(3)
    with pytest.raises(FileNotFoundError):
        src.read("missing")


def test_key_list_pickle_refuses_objects(tmp_path, files):
    import collections

    files(tmp_path / "lup", ["x.jpg"])
    (tmp_path / "cfs.pkl").write_bytes(pickle.dumps([collections.OrderedDict()]))
    from shard_tools.sources.base import load_name_list

    with pytest.raises(SourceError, match="refusing to unpickle"):
        load_name_list(tmp_path / "cfs.pkl")


@pytest.mark.parametrize("name,expect", [
    ("market1501", "expected folders bounding_box_train, query, bounding_box_test"),
    ("dukemtmc", "missing: query, bounding_box_test"),
    ("msmt17", "expected train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2)"),
])
def test_wrong_layout_is_one_line_naming_what_was_expected(tmp_path, name, expect):
    (tmp_path / "bounding_box_train").mkdir()
    with pytest.raises(SourceError) as e:
        open_source(name, tmp_path)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_missing_folder_and_unknown_source(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        open_source("luperson", tmp_path / "nope")
    with pytest.raises(SourceError, match="choose one of luperson"):
        open_source("cuhk03", tmp_path)
