"""`personvit evaluate`: results.json / features.npz / per-query CSV, weights from fine-tuning runs or a
pretraining teacher, flip and re-ranking options, and a clean error when no query can match."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from personvit.checkpoint import CheckpointManager
from personvit.config.core import load_config
from personvit.config.finetune import EvaluateConfig
from personvit.data.reid import ReIDTestDataset, read_reid_split
from personvit.data.reid_transforms import EvalTransform
from personvit.engine import evaluate
from personvit.evaluation import evaluate_rank, pairwise_distance
from personvit.models.build import build_reid_model
from tests.support.reid_data import SMALL, TINY_CONFIG, finetuned_run, sample, write_shard_set


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    return finetuned_run(tmp_path_factory)


def _cfg(shards: Path, out: Path, *overrides: str) -> EvaluateConfig:
    return load_config(EvaluateConfig, TINY_CONFIG, [f"data.shards={shards}", f"run.dir={out}", *SMALL, *overrides])


def test_features_npz_reproduces_results_json(finetuned) -> None:
    shards, run_dir = finetuned
    results = json.loads((run_dir / "results.json").read_text())
    f = np.load(run_dir / "features.npz")
    assert set(f.files) == {"q_feats", "g_feats", "q_pids", "g_pids", "q_camids", "g_camids", "q_keys", "g_keys",
                            "step"}
    assert f["step"].ndim == 0 and int(f["step"]) == results["step"] > 0
    query, gallery = read_reid_split(shards, "query"), read_reid_split(shards, "gallery")
    assert f["q_keys"].tolist() == query.keys and f["g_keys"].tolist() == gallery.keys
    assert np.array_equal(f["q_pids"], query.pids) and np.array_equal(f["g_camids"], gallery.camids)
    assert np.allclose(np.linalg.norm(f["q_feats"], axis=1), 1.0, atol=1e-5)
    dist = pairwise_distance(torch.from_numpy(f["q_feats"]), torch.from_numpy(f["g_feats"])).numpy()
    ref = evaluate_rank(dist, f["q_pids"], f["g_pids"], f["q_camids"], f["g_camids"])
    assert results["mAP"] == pytest.approx(ref["mAP"]) and results["rank1"] == pytest.approx(ref["cmc"][0])
    assert results["mINP"] == pytest.approx(ref["mINP"]) and results["num_query"] == len(query)


def test_evaluating_the_finetuned_checkpoint_matches_the_end_of_training(finetuned, tmp_path: Path) -> None:
    shards, run_dir = finetuned
    out = evaluate.run(_cfg(shards, tmp_path / "ev", f"weights={run_dir}", "eval.per_query_csv=true"))
    trained = json.loads((run_dir / "results.json").read_text())
    assert out["mAP"] == pytest.approx(trained["mAP"], abs=1e-6) and out["rank1"] == trained["rank1"]
    assert out["weights"].endswith(".pt")
    rows = list(csv.DictReader(open(tmp_path / "ev" / "per_query.csv")))
    assert len(rows) == out["num_query"]
    valid_ap = [float(r["ap"]) for r in rows if r["valid"] == "1"]
    assert np.mean(valid_ap) == pytest.approx(out["mAP"], abs=1e-5)
    assert (tmp_path / "ev" / "config.yaml").is_file()


def test_flip_and_rerank_options(finetuned, tmp_path: Path) -> None:
    shards, run_dir = finetuned
    plain = np.load(run_dir / "features.npz")["q_feats"]
    flip = evaluate.run(_cfg(shards, tmp_path / "flip", f"weights={run_dir}", "eval.flip=true"))
    flipped = np.load(tmp_path / "flip" / "features.npz")["q_feats"]
    assert flip["flip"] and not np.allclose(flipped, plain) and np.allclose(np.linalg.norm(flipped, axis=1), 1, atol=1e-5)
    rr = evaluate.run(_cfg(shards, tmp_path / "rr", f"weights={run_dir}", "eval.rerank=true", "eval.k1=10", "eval.k2=3"))
    base = json.loads((run_dir / "results.json").read_text())
    assert rr["rerank"] and rr["mAP"] != base["mAP"], "re-ranking must change the ranking"
    assert 0.0 <= rr["mAP"] <= 1.0


def test_model_init_uses_the_pretraining_teacher_backbone(finetuned, tmp_path: Path) -> None:
    shards, _ = finetuned
    torch.manual_seed(123)
    teacher = build_reid_model("vit_tiny", (32, 16), 0, overrides=dict(patch_size=4, embed_dim=64, depth=2, num_heads=2))
    wrapper = {f"backbone.{k}": v for k, v in teacher.backbone.state_dict().items()}
    wrapper["head.mlp.0.weight"] = torch.randn(8, 64)
    student = {k: torch.zeros_like(v) for k, v in wrapper.items()}
    CheckpointManager(tmp_path / "pre" / "checkpoints").save({"student": student, "teacher": wrapper}, step=10, epoch=1)
    out = evaluate.run(_cfg(shards, tmp_path / "ev", f"model.init={tmp_path / 'pre'}"))
    feats = np.load(tmp_path / "ev" / "features.npz")["q_feats"]
    query = read_reid_split(shards, "query")
    ds = ReIDTestDataset(query, EvalTransform((32, 16)))
    with torch.no_grad():
        want = torch.nn.functional.normalize(teacher.eval().features(torch.stack([ds[i][0] for i in range(4)])), dim=1)
    np.testing.assert_allclose(feats[:4], want.numpy(), atol=1e-5)
    assert out["weights"] == str(tmp_path / "pre")


def test_no_valid_query_is_a_one_line_error(tmp_path: Path) -> None:
    # Every query's identity appears in the gallery only under the query's own camera: nothing to find.
    shards = write_shard_set(tmp_path / "set", {
        "query": [sample(f"q{i}", pid=i + 1, camid=0, seed=i) for i in range(3)],
        "gallery": [sample(f"g{i}", pid=i % 3 + 1, camid=0, seed=10 + i) for i in range(6)],
    })
    with pytest.raises(SystemExit) as exc:
        evaluate.main([str(TINY_CONFIG), f"data.shards={shards}", f"run.dir={tmp_path / 'ev'}", *SMALL, "--random-init"])
    message = str(exc.value.code)
    assert "\n" not in message
    assert message.startswith("personvit evaluate: error: query vs gallery: no query has a true match"), message


def test_unknown_key_and_missing_shards_name_the_culprit(tmp_path: Path) -> None:
    from personvit.config.core import ConfigError

    with pytest.raises(ConfigError, match="eval.flp"):
        load_config(EvaluateConfig, TINY_CONFIG, ["eval.flp=true"])
    with pytest.raises(SystemExit, match="no manifest.json"):
        evaluate.main([str(TINY_CONFIG), f"data.shards={tmp_path / 'nothing'}", f"run.dir={tmp_path / 'ev'}", *SMALL,
                       "--random-init"])


def test_no_weights_is_refused_unless_random_init_is_asked_for(tmp_path: Path, capsys) -> None:
    from personvit.cli import main as personvit_main

    shards = write_shard_set(tmp_path / "set", {
        "query": [sample(f"q{i}", pid=i + 1, camid=0, seed=i) for i in range(3)],
        "gallery": [sample(f"g{i}", pid=i % 3 + 1, camid=1, seed=10 + i) for i in range(6)],
    })
    argv = ["evaluate", str(TINY_CONFIG), f"data.shards={shards}", f"run.dir={tmp_path / 'ev'}", *SMALL]
    assert personvit_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("personvit evaluate: error: nothing to evaluate: set weights="), err
    assert "--random-init" in err[0]
    assert not (tmp_path / "ev").exists(), "a refused evaluation must not create its run folder"
    assert personvit_main([*argv, "--random-init"]) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["weights"] == "random-init" and 0.0 <= results["mAP"] <= 1.0
