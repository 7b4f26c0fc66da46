"""Ranked lists follow the evaluation protocol (first hit = evaluate_rank's); one PNG per query."""

from __future__ import annotations

import json
import tarfile

import numpy as np
from PIL import Image

from personvit.evaluation import evaluate_rank, pairwise_distance
from personvit.viz.cli import main
from personvit.viz.ranks import load_features, ranked_lists


def split_meta(shard_set, split):
    keys, pids, cams = [], [], []
    for tar_path in sorted(shard_set.glob(f"{split}-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    keys.append(m.name.split(".")[0])
                    pids.append(meta["pid"])
                    cams.append(meta["camid"])
    return np.array(keys), np.array(pids), np.array(cams)


def write_features(shard_set, path, seed=0, step=42):
    rng = np.random.default_rng(seed)
    q_keys, q_pids, q_cams = split_meta(shard_set, "query")
    g_keys, g_pids, g_cams = split_meta(shard_set, "gallery")
    centres = rng.normal(size=(10, 16))
    np.savez(path, q_feats=(centres[q_pids] + rng.normal(size=(len(q_pids), 16))).astype(np.float32),
             g_feats=(centres[g_pids] + rng.normal(size=(len(g_pids), 16))).astype(np.float32),
             q_pids=q_pids, g_pids=g_pids, q_camids=q_cams, g_camids=g_cams, q_keys=q_keys, g_keys=g_keys,
             **({} if step is None else {"step": np.int64(step)}))
    return path


def test_ranked_lists_agree_with_evaluate_rank(shard_set, tmp_path):
    data = load_features(write_features(shard_set, tmp_path / "features.npz"))
    nq = len(data["q_keys"])
    lists = ranked_lists(data, list(range(nq)), topk=len(data["g_keys"]))
    dist = pairwise_distance(*(__import__("torch").from_numpy(data[k]) for k in ("q_feats", "g_feats"))).numpy()
    pq = evaluate_rank(dist, data["q_pids"], data["g_pids"], data["q_camids"], data["g_camids"],
                       max_rank=5, return_per_query=True)["per_query"]
    for r in lists:
        assert np.all(np.diff(r.dist) >= 0)
        # Same-pid same-camera items are gone; the first hit is where the metric puts it.
        same = (data["g_pids"][r.gallery] == data["q_pids"][r.query]) & \
               (data["g_camids"][r.gallery] == data["q_camids"][r.query])
        assert not same.any()
        assert int(np.argmax(r.hit)) + 1 == pq["first_rank"][r.query]


def test_cli_writes_one_png_per_query(shard_set, tmp_path):
    feats = write_features(shard_set, tmp_path / "features.npz")
    rc = main(["ranks", "--features", str(tmp_path), "--shards", str(shard_set), "--queries", "0003_c1_q",
               "0005_c1_q", "--topk", "5", "--out", str(tmp_path / "viz")])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "viz").glob("*.png"))
    assert names == ["ranks_step42_0003_c1_q.png", "ranks_step42_0005_c1_q.png"]
    with Image.open(tmp_path / "viz" / names[0]) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[1] > 6 * 96  # query + 5 gallery panels
    green = (arr[..., 1] > 150) & (arr[..., 0] < 30) & (arr[..., 2] < 30)
    red = (arr[..., 0] > 200) & (arr[..., 1] < 30) & (arr[..., 2] < 30)
    assert green.sum() > 100 or red.sum() > 100  # coloured frames are drawn
    assert main(["ranks", "--features", str(feats), "--shards", str(shard_set), "--queries", "zzz",
                 "--out", str(tmp_path / "viz")]) == 2


def test_step_from_results_json_when_features_lack_it(shard_set, tmp_path):
    write_features(shard_set, tmp_path / "features.npz", step=None)
    (tmp_path / "results.json").write_text(json.dumps({"mAP": 0.5, "step": 5}))
    assert main(["ranks", "--features", str(tmp_path), "--shards", str(shard_set), "--num", "2",
                 "--out", str(tmp_path / "viz")]) == 0
    names = sorted(p.name for p in (tmp_path / "viz").glob("*.png"))
    assert len(names) == 2 and all(n.startswith("ranks_step5_") for n in names)
