"""The kNN retrieval monitor of pretraining: figures in metrics.jsonl, and no effect on the run.

Real shards on both sides (a synthetic LUPerson set to pretrain on, a packed Market-style set to
retrieve on); the runs are the tiny recipe in-process, the resume check SIGKILLs a real process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from personvit import preemption  # noqa: E402
from personvit.checkpoint import compare_checkpoints  # noqa: E402
from personvit.config.core import ConfigError, load_config  # noqa: E402
from personvit.config.pretrain import KnnMonitorConfig, PretrainConfig  # noqa: E402
from personvit.data.shards import ShardError  # noqa: E402
from personvit.engine.knn_monitor import KnnMonitor, token_features  # noqa: E402
from personvit.engine.pretrain import run  # noqa: E402
from personvit.models import build_vit  # noqa: E402
from tests.support.kill_resume import kill_and_resume, metrics_step_reached  # noqa: E402
from tests.support.pretrain import SMALL, TINY_CONFIG, pretrain_cmd, subprocess_env, synthetic_lup_shards  # noqa: E402
from tests.support.reid_data import reid_shards  # noqa: E402

IMAGES, BATCH, EPOCHS = 128, 16, 3
NITER = IMAGES // BATCH
KNN_KEYS = {"knn_cls_map", "knn_cls_rank1", "knn_patch_map", "knn_patch_rank1"}


@pytest.fixture(scope="module")
def lup(tmp_path_factory) -> Path:
    return synthetic_lup_shards(tmp_path_factory.mktemp("lup"), images=IMAGES)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return reid_shards(tmp_path_factory, identities=12, cameras=2)


def _overrides(market: Path, every: int) -> list[str]:
    return [f"train.epochs={EPOCHS}", "run.log_every_steps=3", "checkpoint.every_steps=5",
            f"monitor.every_epochs={every}", f"monitor.shards={market}", "monitor.batch_size=32"]


def _cfg(lup: Path, run_dir: Path, *overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, TINY_CONFIG, [f"data.shards={lup}", f"run.dir={run_dir}", *SMALL, *overrides])


@pytest.fixture(scope="module")
def runs(lup, market, tmp_path_factory) -> dict[str, Path]:
    """The same run with the monitor every 2 epochs (so epochs 2 and 3, the last) and with it off."""
    root = tmp_path_factory.mktemp("knn-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, every in (("on", 2), ("off", 0)):
            preemption.reset()
            run(_cfg(lup, root / name, *_overrides(market, every)))
    finally:
        torch.set_num_threads(threads)
    return {"on": root / "on", "off": root / "off"}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_knn_figures_are_logged_at_the_due_epoch_ends(runs):
    rows = {r["step"]: r for r in _metrics(runs["on"]) if KNN_KEYS & r.keys()}
    assert sorted(rows) == [2 * NITER, 3 * NITER]
    for row in rows.values():
        assert KNN_KEYS <= row.keys()
        assert all(0.0 <= row[k] <= 1.0 for k in KNN_KEYS), row
        assert "loss" in row  # the epoch's last training line carries them
    # Off-cadence steps carry no figures, and a run with the monitor off has none at all.
    assert not any(KNN_KEYS & r.keys() for r in _metrics(runs["off"]))


def test_the_monitor_does_not_change_the_run(runs):
    assert compare_checkpoints(runs["on"], runs["off"]) is None
    on = [(r["step"], r["loss"]) for r in _metrics(runs["on"]) if "loss" in r]
    off = {r["step"]: r["loss"] for r in _metrics(runs["off"])}
    assert on and all(off[s] == loss for s, loss in on if s in off)


def test_evaluate_leaves_rng_and_modes_as_found(market):
    vit = build_vit("vit_tiny", img_size=(64, 32), patch_size=8, embed_dim=32, depth=1, num_heads=2)
    vit.train()
    vit.blocks.eval()  # a mixed state must come back as it was, not as all-train
    cfg = KnnMonitorConfig(every_epochs=1, shards=str(market), batch_size=16)
    monitor = KnnMonitor(cfg, (64, 32), 1, torch.device("cpu"), None, is_main=True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    figures = monitor.evaluate(vit)
    assert torch.equal(torch.get_rng_state(), before)
    assert vit.training and not vit.blocks.training
    assert set(figures) == KNN_KEYS and all(0.0 <= v <= 1.0 for v in figures.values())
    # The two features really differ: CLS vs the mean of the patch tokens.
    tokens = torch.randn(2, 5, 4)
    feats = token_features(tokens)
    assert torch.equal(feats[:, :4], tokens[:, 0]) and torch.allclose(feats[:, 4:], tokens[:, 1:].mean(1))


def test_due_epochs_include_the_last(market):
    cfg = KnnMonitorConfig(every_epochs=4, shards=str(market))
    monitor = KnnMonitor(cfg, (64, 32), 10, torch.device("cpu"), None, is_main=False)
    assert [e for e in range(10) if monitor.due(e)] == [3, 7, 9]


def test_a_set_with_nothing_to_retrieve_fails_before_training(market, tmp_path):
    cfg = KnnMonitorConfig(every_epochs=1, shards=str(market), gallery_split="query")  # query vs itself
    with pytest.raises(ShardError, match="nothing to retrieve"):
        KnnMonitor(cfg, (64, 32), 1, torch.device("cpu"), None, is_main=True)


@pytest.mark.parametrize(("overrides", "culprit"), [
    (["monitor.every_epochs=1"], "needs shards"),
    (["monitor.every_epochs=-1"], "every_epochs"),
    (["monitor.img_size=[60,32]"], "patch_size"),
])
def test_bad_monitor_settings_name_the_key(lup, tmp_path, overrides, culprit):
    with pytest.raises(ConfigError, match=culprit):
        _cfg(lup, tmp_path, *overrides)


@pytest.mark.slow
def test_sigkill_and_rerun_with_the_monitor_ends_bitwise_equal(lup, market, runs, tmp_path):
    run_dir = tmp_path / "killed"
    cmd = pretrain_cmd(lup, run_dir, *_overrides(market, 2), "data.num_workers=0")
    # Killed in epoch 3, after the epoch-2 figures and checkpoint: the rerun resumes from it and must
    # neither lose nor repeat a figure.
    attempts = kill_and_resume(cmd, [metrics_step_reached(run_dir / "metrics.jsonl", 2 * NITER + 1)],
                               env=subprocess_env(), cwd=tmp_path, timeout=240)
    assert [a.killed for a in attempts] == [True, False]
    assert "resumed from" in attempts[-1].output
    result = subprocess.run([sys.executable, "-m", "personvit", "ckpt", "compare", str(runs["on"]), str(run_dir)],
                            capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    knn_steps = [r["step"] for r in _metrics(run_dir) if KNN_KEYS & r.keys()]
    assert knn_steps == [2 * NITER, 3 * NITER]
