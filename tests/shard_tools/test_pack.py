"""End-to-end packing: determinism across workers, reading back with webdataset, bad inputs, subsets."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import webdataset as wds

from shard_tools.info import info_table
from shard_tools.manifest import read_manifest
from shard_tools.pack import pack
from shard_tools.sources import SourceError, open_source
from shard_tools.verify import verify


def bogus_huffman(data: bytes) -> bytes:
    """A JPEG whose markers are intact but whose Huffman table cannot be built: only a decode tells."""
    b = bytearray(data)
    dht = b.index(b"\xff\xc4")
    b[dht + 5: dht + 21] = b"\xff" * 16
    return bytes(b)


def test_output_is_byte_identical_for_1_and_2_workers(tiny_synth, tmp_path, tree_bytes):
    pack("market1501", tiny_synth, tmp_path / "w1", maxcount=7, workers=1, progress=False)
    pack("market1501", tiny_synth, tmp_path / "w2", maxcount=7, workers=2, progress=False)
    a, b = tree_bytes(tmp_path / "w1"), tree_bytes(tmp_path / "w2")
    assert len([n for n in a if n.endswith(".tar")]) > 4
    assert a == b


def test_shards_read_back_with_plain_webdataset(tiny_synth, tmp_path):
    out = tmp_path / "s"
    m = pack("market1501", tiny_synth, out, maxcount=10, progress=False)
    src = open_source("market1501", tiny_synth)
    expected = {r.path: r for r in src.list().records}
    for split, info in m["splits"].items():
        urls = [str(out / s["name"]) for s in info["shards"]]
        n = 0
        pids, cams = set(), set()
        for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
            meta = sample["json"]
            rec = expected[meta["path"]]
            assert (rec.split, rec.pid, rec.camid, meta["dataset"]) == (split, meta["pid"], meta["camid"], "market1501")
            assert "." not in sample["__key__"]
            assert sample["jpg"].size == (64, 128)
            pids.add(meta["pid"])
            cams.add(meta["camid"])
            n += 1
        assert n == info["samples"] == sum(s["samples"] for s in info["shards"])
        assert (info["num_ids"], info["num_cams"]) == (len({p for p in pids if p >= 0}), len(cams))
    # shard sizes equal except the last; JPEG bytes stored unchanged
    sizes = [s["samples"] for s in m["splits"]["train"]["shards"]]
    assert set(sizes[:-1]) == {10} and 0 < sizes[-1] <= 10
    first = next(iter(wds.WebDataset(str(out / "query-000000.tar"), shardshuffle=False)))
    meta = json.loads(first["json"])
    assert first["jpg"] == (tiny_synth / meta["path"]).read_bytes()
    assert 0 in {json.loads(s["json"])["pid"] for s in wds.WebDataset([str(out / s["name"]) for s in m["splits"]["gallery"]["shards"]], shardshuffle=False)}


def test_bad_inputs_are_skipped_counted_and_listed(tiny_synth, tmp_path, jpeg):
    src = tmp_path / "lup"
    shutil.copytree(tiny_synth / "unlabeled", src / "images")
    good = len(list((src / "images").iterdir()))
    bad = {
        "images/zero.jpg": b"",
        "images/notes.txt": b"hello",
        "images/trunc.jpg": jpeg(5)[:700],
        "images/corrupt.jpg": jpeg(6)[:300] + jpeg(6)[-2:],
        "images/huffman.jpg": bogus_huffman(jpeg(7)),
    }
    for name, data in bad.items():
        (src / name).write_bytes(data)
    os.symlink(src / "gone.jpg", src / "images" / "dangling.jpg")
    m = pack("luperson", src, tmp_path / "out", maxcount=16, workers=2, decode_check=True, progress=False)
    assert m["splits"]["train"]["samples"] == good
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert reasons == {
        "images/zero.jpg": "empty file", "images/notes.txt": "not an image",
        "images/trunc.jpg": "truncated JPEG (no end-of-image marker)",
        "images/corrupt.jpg": reasons["images/corrupt.jpg"], "images/dangling.jpg": "unreadable (FileNotFoundError)",
        "images/huffman.jpg": reasons["images/huffman.jpg"],
    }
    assert reasons["images/corrupt.jpg"].startswith("corrupt JPEG")
    assert reasons["images/huffman.jpg"].startswith("corrupt JPEG (OSError")  # found by the decode only
    assert m["num_skipped"] == 6
    assert read_manifest(tmp_path / "out") == m
    caption = info_table(m).caption
    assert "skipped 6 bad input(s) (2 corrupt JPEG, 1 empty file, 1 not an image, 1 truncated JPEG, 1 unreadable)" in caption
    # the default (marker) check skips all but the bogus Huffman table, which `verify` then reports
    m2 = pack("luperson", src, tmp_path / "fast", maxcount=16, progress=False)
    assert {s["path"] for s in m2["skipped"]} == set(reasons) - {"images/huffman.jpg"}
    _, problems = verify(tmp_path / "fast")
    assert len(problems) == 1 and "huffman.jpg does not decode" in problems[0]


def test_fraction_is_seeded_and_cfs_keeps_the_top(tiny_synth, tmp_path):
    a = pack("luperson", tiny_synth / "unlabeled", tmp_path / "a", fraction=0.5, seed=1, progress=False)
    b = pack("luperson", tiny_synth / "unlabeled", tmp_path / "b", fraction=0.5, seed=1, progress=False)
    c = pack("luperson", tiny_synth / "unlabeled", tmp_path / "c", fraction=0.5, seed=2, progress=False)
    assert a["splits"]["train"]["samples"] == 30 and a == b
    assert a["splits"]["train"]["shards"] != c["splits"]["train"]["shards"]
    names = sorted(p.name for p in (tiny_synth / "unlabeled").iterdir())[::-1]  # "scores" sorted descending
    (tmp_path / "cfs.pkl").write_bytes(pickle.dumps(names + ["not-there.jpg"]))
    m = pack("luperson", tiny_synth / "unlabeled", tmp_path / "cfs", fraction=0.1, cfs_list=str(tmp_path / "cfs.pkl"),
             progress=False)
    kept = sorted(json.loads(s["json"])["path"] for s in
                  wds.WebDataset([str(tmp_path / "cfs" / s["name"]) for s in m["splits"]["train"]["shards"]],
                                 shardshuffle=False))
    assert kept == sorted(names[:7])  # ceil(0.1 * 61) = 7 names, all present
    assert "cfs names not found" not in m["dropped"]  # the empty query/gallery splits miss nothing
    (tmp_path / "cfs2.pkl").write_bytes(pickle.dumps(["not-there.jpg", *names]))
    m = pack("luperson", tiny_synth / "unlabeled", tmp_path / "cfs2", fraction=0.1, cfs_list=str(tmp_path / "cfs2.pkl"),
             progress=False)
    assert m["dropped"]["cfs names not found"] == 1 and m["splits"]["train"]["samples"] == 6


def test_rerun_with_other_options_into_same_folder_is_refused(tiny_synth, tmp_path):
    pack("luperson", tiny_synth / "unlabeled", tmp_path / "o", maxcount=10, progress=False)
    with pytest.raises(SourceError, match="different pack"):
        pack("luperson", tiny_synth / "unlabeled", tmp_path / "o", maxcount=11, progress=False)


def test_progress_and_summary_lines(tiny_synth, tmp_path, capsys):
    pack("luperson", tiny_synth / "unlabeled", tmp_path / "p", maxcount=25, progress=True)
    out = capsys.readouterr().out
    assert "train: 60 samples -> 3 shard(s) of 25 (last 10)" in out
    assert "pack luperson: 60/60 (100.0%)" in out  # plain line off a terminal
    assert "images/s" in out


def test_colliding_keys_are_made_unique_deterministically(tmp_path, files):
    # `a.b/x.jpg`, `a_b/x.jpg` and `a_b/x_1.jpg` all want keys around `a_b_x`; `c/x.png.jpg` has an inner dot
    files(tmp_path / "lup", ["a.b/x.jpg", "a_b/x.jpg", "a_b/x_1.jpg", "c/x.png.jpg"])
    m = pack("luperson", tmp_path / "lup", tmp_path / "o", shuffle_train=False, progress=False)
    keys = {json.loads(s["json"])["path"]: s["__key__"] for s in
            wds.WebDataset([str(tmp_path / "o" / s["name"]) for s in m["splits"]["train"]["shards"]], shardshuffle=False)}
    assert keys == {"a.b/x.jpg": "a_b_x", "a_b/x.jpg": "a_b_x_2", "a_b/x_1.jpg": "a_b_x_1", "c/x.png.jpg": "c_x_png"}


@pytest.mark.parametrize("path", ["images/0001.jpg", 'we"ird\\name ü.jpg'])
def test_sample_json_equals_json_dumps(path):
    from shard_tools.pack import sample_json

    expect = json.dumps({"pid": 3, "camid": -1, "dataset": "luperson", "path": path}, sort_keys=True, separators=(",", ":"))
    assert sample_json("luperson", 3, -1, path) == expect.encode()
