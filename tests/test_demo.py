"""`python -m examples.demo --size small`, end to end, as `make demo` runs it (real shards, real jobs).

The jobs go through submitit's local executor: the Slurm suite (tests/slurm) already proves
submission to a real cluster, and the local executor keeps this CI test fast.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from personvit.checkpoint import load_checkpoint
from shard_tools.verify import verify

REPO = Path(__file__).resolve().parent.parent
SEEDS = 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.demo",
            "--size",
            "small",
            "--seeds",
            str(SEEDS),
            "--executor",
            "local",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return out, proc.stdout


def test_says_which_executor_and_announces_stages(demo):
    _, stdout = demo
    first = next(line for line in stdout.splitlines() if line.startswith("[demo"))
    assert "submitit local executor" in first
    done = [line for line in stdout.splitlines() if line.startswith("[demo") and " done in " in line]
    for stage in ("-> shards", "verify shards", "pretraining", "person-vs-scene", "fine-tuning", "visualisations"):
        assert any(stage in line for line in done), stage


def test_shards_verify(demo):
    out, _ = demo
    for name in ("market-shards", "val-shards", "luperson-shards"):
        checked, problems = verify(out / "data" / name, decode=True)
        assert checked > 0 and problems == [], (name, problems)


def test_pretraining_checkpoint_and_losses(demo):
    out, _ = demo
    for run in ("pretrain", "pretrain-dino-only"):
        ckpts = sorted((out / run / "checkpoints").glob("ckpt-*.pt"))
        assert ckpts, f"no {run} checkpoint"
        assert load_checkpoint(ckpts[-1])["step"] > 0
    # The ablation is the same run without the masked-patch term.
    import yaml

    full, dino = (yaml.safe_load((out / run / "config.yaml").read_text()) for run in ("pretrain", "pretrain-dino-only"))
    assert dino["loss"]["lambda2"] == 0 and full["loss"]["lambda2"] > 0
    full["loss"]["lambda2"] = 0
    assert {k: v for k, v in full.items() if k != "run"} == {k: v for k, v in dino.items() if k != "run"}
    # The kNN monitor watches the validation split of training people, never the test split.
    assert dino["monitor"]["shards"].endswith("val-shards")
    rows = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert len([r for r in rows if "loss" in r]) >= 2  # first and last differ in time
    # The kNN monitor is on in the demo: the last epoch always gets its figures; `personvit report` ran.
    knn = [r for r in rows if "knn_cls_map" in r]
    assert knn and all(0.0 <= r["knn_patch_rank1"] <= 1.0 for r in knn)
    assert (out / "pretrain" / "report" / "knn.png").is_file() and (out / "pretrain" / "report" / "summary.md").is_file()


STARTS = {"pretrained": "pretrained teacher", "dino-only": "DINO-only teacher", "random": "random init"}


def test_finetune_results_for_every_start_and_seed(demo):
    out, _ = demo
    summary = json.loads((out / "summary.json").read_text())
    for start, name in STARTS.items():
        for seed in range(SEEDS):
            run = out / "finetune" / f"{start}-seed{seed}"
            res = json.loads((run / "results.json").read_text())
            assert 0.0 <= res["mAP"] <= 1.0 and 0.0 <= res["rank1"] <= 1.0
            assert list((run / "checkpoints").glob("ckpt-*.pt")), run
            # The summary reports exactly what the run wrote.
            assert summary["finetune"][name]["mAP"][seed] == pytest.approx(100 * res["mAP"])
    # The pretrained start really loaded the teacher: its weights differ from the random start's.
    a = load_checkpoint(sorted((out / "finetune" / "pretrained-seed0" / "checkpoints").glob("ckpt-*.pt"))[-1])
    b = load_checkpoint(sorted((out / "finetune" / "random-seed0" / "checkpoints").glob("ckpt-*.pt"))[-1])
    assert _first_tensor(a) is not None and not _first_tensor(a).equal(_first_tensor(b))


def _first_tensor(state):
    import torch

    stack = [state]
    while stack:
        item = stack.pop(0)
        if isinstance(item, torch.Tensor) and item.numel() > 1:
            return item
        if isinstance(item, dict):
            stack.extend(item[k] for k in sorted(item))
    return None


def test_results_md_and_table(demo):
    out, stdout = demo
    md = (out / "RESULTS.md").read_text()
    for needle in (
        "pretrained teacher",
        "random init",
        "mAP",
        "Rank-1",
        "pretrained teacher CLS",
        "DINO-only teacher CLS",
        "random-init CLS",
        "pretraining loss",
        "effective rank",
        "same person over same scene",
        "Ablation (paper Table 4, w/o MIM)",
        "executor **local**",
    ):
        assert needle in md, needle
    for name in STARTS.values():
        assert f"| {name} | {SEEDS} |" in stdout, name
    summary = json.loads((out / "summary.json").read_text())
    pre, rnd = summary["finetune"]["pretrained teacher"]["mAP"], summary["finetune"]["random init"]["mAP"]
    # The person-vs-scene fractions are measured for every backbone and raw pixels, in [0, 1].
    person = {k: v["person_cls"] for k, v in summary["no_finetune"].items() if "person_cls" in v}
    assert set(person) == {"pretrained teacher CLS", "DINO-only teacher CLS", "random-init CLS", "raw pixels 16x8"}
    assert all(0.0 <= v <= 1.0 for v in person.values())
    claims_win = summary["verdict"].startswith("Pretraining helps")
    # A win is claimed exactly when every paired seed wins by more than the larger seed spread.
    spread = max(statistics.stdev(pre), statistics.stdev(rnd))
    assert claims_win == all(p - r > spread for p, r in zip(pre, rnd))


def test_visualisations(demo):
    out, _ = demo
    md = (out / "RESULTS.md").read_text()
    for kind in ("attention", "patch-clusters", "correspondence", "ranks"):
        pngs = list((out / "viz" / kind).glob("*.png"))
        assert pngs, kind
        assert all(p.stat().st_size > 1000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs), kind
        assert f"viz/{kind}/" in md


def test_verdict_claims_a_win_only_beyond_the_seed_spread():
    from examples.demo.report import StartResult, pretraining_verdict

    def start(maps):
        s = StartResult("x")
        for i, m in enumerate(maps):
            s.add(i, {"mAP": m / 100, "rank1": m / 100})
        return s

    rnd = start([7.4, 11.4])
    assert pretraining_verdict(start([20.0, 21.0]), rnd).startswith("Pretraining helps")
    assert "not claimed as a win" in pretraining_verdict(start([8.4, 11.8]), rnd)  # ahead, within spread
    assert pretraining_verdict(start([5.0, 21.0]), rnd).startswith("No claim")  # loses one seed


def test_losses_are_means_of_the_first_and_last_tenth(tmp_path):
    from examples.demo.report import loss_first_last

    # 20 rows: first two (10%) average 9.0, last two 5.0; single rows would say 10 -> 4.
    values = [10.0, 8.0] + [7.0] * 16 + [6.0, 4.0]
    rows = [{"step": i, "loss": v, "dino": v / 2} for i, v in enumerate(values)] + [{"step": 99, "note": "x"}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = loss_first_last(path, keys=("loss", "dino", "mim"))
    assert out == {"loss": (9.0, 5.0), "dino": (4.5, 2.5)}  # mim absent everywhere: left out
    path.write_text(json.dumps({"step": 1}) + "\n")
    with pytest.raises(ValueError, match="no loss logged"):
        loss_first_last(path)


def test_feature_diagnostics_see_collapse_and_camera_matching(tmp_path):
    import numpy as np

    from examples.demo.report import feature_diagnostics

    rng = np.random.default_rng(0)
    g_cams, q_cams = np.repeat(np.arange(4), 25), np.array([0, 1, 1, 2, 3, 3, 3, 3])  # 100 gallery, 8 queries

    def save(make, name):
        q, g = make(q_cams), make(g_cams)
        q, g = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, g))
        np.savez(tmp_path / name, q_feats=q, g_feats=g, q_camids=q_cams, g_camids=g_cams)
        return feature_diagnostics(tmp_path / name)

    # Features = a camera code + small noise: rank ~ the 4 cameras, every nearest neighbour same camera.
    d = save(lambda cams: np.eye(16)[cams] + 1e-2 * rng.standard_normal((len(cams), 16)), "cam.npz")
    assert (
        2.5 < d["effective_rank"] < 4.5 and d["top1_same_camera"] == 1.0 and d["chance_same_camera"] == 0.25
    )
    # Isotropic features: high rank, the camera of the neighbour is left to chance.
    d = save(lambda cams: rng.standard_normal((len(cams), 16)), "iso.npz")
    assert d["effective_rank"] > 10 and d["top1_same_camera"] < 0.75
