"""Synthetic pedestrians: deterministic, in Market-1501 layout, and learnable from identity cues."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from shard_tools.cli import main
from shard_tools.sources import open_source
from shard_tools.synth import make_synthetic, person_preference, person_scene_triplets, write_validation_split


@pytest.fixture(scope="module")
def synth40(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth40")
    make_synthetic(out, identities=40, cameras=4, unlabeled=90, seed=11, workers=2, val_identities=6)
    return out


def body_bands(a: np.ndarray) -> np.ndarray:
    """Colour of 8 horizontal bands over the body's columns: a crude identity descriptor."""
    return a[:, 20:44].reshape(8, 16, 24, 3).mean((1, 2)).ravel()


def outer_columns(a: np.ndarray) -> np.ndarray:
    """Mean colour of the left and right 6 columns: mostly background."""
    return np.concatenate([a[:, :6].mean((0, 1)), a[:, -6:].mean((0, 1))])


def gray(feature):
    """`feature` of the image's luminance (what survives grayscale augmentation)."""
    return lambda a: feature(np.repeat(a.mean(axis=2, keepdims=True), 3, axis=2))


def test_same_seed_same_bytes_for_any_workers_and_other_seed_differs(tmp_path, tiny_synth, tree_bytes):
    make_synthetic(tmp_path / "a", identities=12, cameras=3, unlabeled=60, seed=3, workers=2)
    make_synthetic(tmp_path / "b", identities=12, cameras=3, unlabeled=60, seed=4)
    for folder in ("bounding_box_train", "query", "bounding_box_test", "unlabeled"):
        assert tree_bytes(tmp_path / "a" / folder) == tree_bytes(tiny_synth / folder)  # tiny_synth: seed 3, 1 worker
    assert tree_bytes(tmp_path / "a" / "query") != tree_bytes(tmp_path / "b" / "query")


def test_market_layout_parses_cleanly(synth40):
    lst = open_source("market1501", synth40).list()
    assert lst.skipped == [] and lst.dropped["junk (pid -1)"] >= 1
    split = {s: [r for r in lst.records if r.split == s] for s in ("train", "query", "gallery")}
    train_ids = {r.pid for r in split["train"]}
    test_ids = {r.pid for r in split["query"]}
    assert len(train_ids) == 20 and len(test_ids) == 20 and not train_ids & test_ids
    assert 0 in {r.pid for r in split["gallery"]}  # distractors
    assert {r.camid for r in lst.records} <= set(range(4))
    for q in split["query"]:  # every query has a true match in another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in split["gallery"])
    img = Image.open(synth40 / split["query"][0].path)
    assert (img.format, img.size, img.mode) == ("JPEG", (64, 128), "RGB")
    meta = json.loads((synth40 / "synth.json").read_text())
    assert meta["images"]["unlabeled"] == 90 and len(list((synth40 / "unlabeled").glob("*.jpg"))) == 90


def test_validation_split_holds_out_training_people_in_market_layout(synth40):
    val = open_source("market1501", synth40 / "val").list()
    split = {s: [r for r in val.records if r.split == s] for s in ("train", "query", "gallery")}
    held = {r.pid for r in split["query"]}
    all_train = open_source("market1501", synth40).list().records
    train_pids = sorted({r.pid for r in all_train if r.split == "train"})
    assert held == set(train_pids[-6:]) and not held & {r.pid for r in split["train"]}
    assert {r.pid for r in split["gallery"]} == held  # no test-split person leaks into the tuning split
    assert sum(len(v) for v in split.values()) == sum(r.split == "train" for r in all_train)
    for q in split["query"]:
        assert any(g.pid == q.pid and g.camid != q.camid for g in split["gallery"])
    with pytest.raises(ValueError, match="--val-identities must be in 1..19"):
        write_validation_split(synth40, 20)


def _rank1(synth, feature) -> tuple[float, float]:
    """Cross-camera Rank-1 (Market protocol) of cosine retrieval with `feature`, and chance level."""
    recs = open_source("market1501", synth).list().records
    q = [r for r in recs if r.split == "query"]
    g = [r for r in recs if r.split == "gallery"]

    def feats(rs):
        f = np.stack([feature(np.asarray(Image.open(synth / r.path).convert("RGB"), np.float32) / 255) for r in rs])
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    sim = feats(q) @ feats(g).T
    hits = []
    for i, r in enumerate(q):
        keep = [j for j in np.argsort(-sim[i], kind="stable") if not (g[j].pid == r.pid and g[j].camid == r.camid)]
        hits.append(g[keep[0]].pid == r.pid)
    return float(np.mean(hits)), 1.0 / len({r.pid for r in g})


def test_identity_is_learnable_across_cameras_and_backgrounds_are_not_a_shortcut(synth40):
    r1_body, chance = _rank1(synth40, body_bands)
    r1_bg, _ = _rank1(synth40, outer_columns)  # must not identify people
    r1_gray, _ = _rank1(synth40, gray(body_bands))  # shape, pattern, layout: survive grayscale
    assert r1_body >= 0.5 and r1_body >= 8 * chance, (r1_body, chance)
    assert r1_bg <= 0.25, r1_bg
    assert r1_gray >= 4 * chance, (r1_gray, chance)


def test_unlabeled_images_share_the_person_not_the_scene(synth40):
    # 90 images, 3 per person, each with its own scene: the nearest other image by body colour is
    # mostly the same person; by background it is as good as random
    paths = sorted((synth40 / "unlabeled").glob("*.jpg"))
    person = np.arange(len(paths)) // 3

    def top1_same_person(feature) -> float:
        f = np.stack([feature(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255) for p in paths])
        f = f - f.mean(0)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        sim = f @ f.T
        np.fill_diagonal(sim, -np.inf)
        return float((person[sim.argmax(1)] == person).mean())

    chance = 2 / (len(paths) - 1)
    assert top1_same_person(body_bands) >= 0.5
    assert top1_same_person(outer_columns) <= 4 * chance + 0.05


def test_person_scene_triplets_separate_person_from_scene_features():
    triplets = person_scene_triplets(40, seed=2)
    assert person_scene_triplets(2, seed=2)[1][2].tobytes() == triplets[1][2].tobytes()  # a function of seed

    def feats(k, feature):
        return np.stack([feature(np.asarray(t[k], np.float32) / 255) for t in triplets])

    def preference(feature):
        return person_preference(*(feats(k, feature) for k in range(3)))

    assert preference(body_bands) >= 0.8  # a person feature picks the same person
    assert preference(outer_columns) <= 0.1  # a scene feature picks the same scene: the test can fail
    assert person_preference(np.eye(3), np.eye(3), np.roll(np.eye(3), 1, 0)) == 1.0


def test_cli_synth_then_pack_then_verify(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d"), "--identities", "6", "--cameras", "2", "--unlabeled", "9"]) == 0
    assert "rendered" in capsys.readouterr().out
    assert main(["pack", "market1501", str(tmp_path / "d"), str(tmp_path / "s"), "--maxcount", "8", "--quiet"]) == 0
    assert main(["pack", "luperson", str(tmp_path / "d" / "unlabeled"), str(tmp_path / "u"), "--quiet"]) == 0
    assert main(["verify", str(tmp_path / "s")]) == 0 and main(["verify", str(tmp_path / "u")]) == 0
    assert main(["synth", str(tmp_path / "e"), "--cameras", "12"]) == 2
    assert "--cameras must be in 2..9" in capsys.readouterr().err
