"""Fine-tuning set-up without training: init from a pretraining teacher, optimiser groups, lr per epoch,
and resume refusing a checkpoint it cannot continue exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from personvit.checkpoint import CheckpointError, CheckpointManager
from personvit.config.core import load_config
from personvit.config.finetune import FinetuneConfig, FinetuneTrainConfig
from personvit.distributed import DistInfo
from personvit.engine.finetune import Finetuner, epoch_lrs
from personvit.models.vit import build_vit
from tests.support.reid_data import SMALL, TINY_CONFIG, reid_shards

SINGLE = DistInfo(0, 1, 0, torch.device("cpu"), None)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return reid_shards(tmp_path_factory)


def _cfg(shards: Path, run_dir: Path, *overrides: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, TINY_CONFIG, [f"data.shards={shards}", f"run.dir={run_dir}", *SMALL, *overrides])


def test_backbone_starts_from_the_teacher_not_the_student(shards: Path, tmp_path: Path) -> None:
    torch.manual_seed(7)
    teacher = build_vit("vit_tiny", (32, 16), patch_size=4, embed_dim=64, depth=2, num_heads=2)
    student = build_vit("vit_tiny", (32, 16), patch_size=4, embed_dim=64, depth=2, num_heads=2)
    wrap = lambda m: {**{f"backbone.{k}": v for k, v in m.state_dict().items()}, "head.last_layer.weight": torch.ones(3)}  # noqa: E731
    CheckpointManager(tmp_path / "pre" / "checkpoints").save({"student": wrap(student), "teacher": wrap(teacher)}, 5, 1)
    tuner = Finetuner(_cfg(shards, tmp_path / "ft", f"model.init={tmp_path / 'pre'}"), SINGLE, tmp_path / "ft")
    got = tuner.model.backbone.state_dict()
    for k, v in teacher.state_dict().items():
        assert torch.equal(got[k], v), k
    assert tuner.model.classifier.out_features == 20  # train identities of the synthetic set


def test_optimizer_groups_and_scaled_lr(shards: Path, tmp_path: Path) -> None:
    tuner = Finetuner(_cfg(shards, tmp_path / "ft", "train.base_lr=0.04", "train.lr_ref_batch=64"), SINGLE, tmp_path / "ft")
    assert tuner.lr == pytest.approx(0.04 * 32 / 64), "lr scales linearly with the PK batch (8 ids x 4)"
    weights, biases = tuner.optimizer.param_groups
    names = {id(p): n for n, p in tuner.model.named_parameters()}
    assert all(names[id(p)].endswith("bias") for p in biases["params"])
    assert not any(names[id(p)].endswith("bias") for p in weights["params"])
    frozen = {"bottleneck.bias", "backbone.masked_embed"}
    assert frozen.isdisjoint(names[id(p)] for g in (weights, biases) for p in g["params"])
    assert (weights["lr_factor"], biases["lr_factor"], weights["momentum"]) == (1.0, 2.0, 0.9)


def test_epoch_lrs_follow_the_recipe() -> None:
    t = FinetuneTrainConfig()  # 120 epochs, 20 warmup from 0.01 x lr, floor 0.002 x lr
    lrs = epoch_lrs(4e-4, t)
    assert len(lrs) == 120 and lrs[0] == pytest.approx(4e-6)
    assert np.all(np.diff(lrs[:20]) > 0) and lrs[19] == pytest.approx(4e-4)
    assert np.all(np.diff(lrs[20:]) < 0) and 0.002 * 4e-4 < lrs[-1] < 0.01 * 4e-4
    short = epoch_lrs(0.1, FinetuneTrainConfig(epochs=3, warmup_epochs=20))
    assert len(short) == 3 and np.all(np.diff(short) > 0), "a run shorter than the warmup only warms up"


def test_resume_refuses_another_world_size(shards: Path, tmp_path: Path) -> None:
    cfg = _cfg(shards, tmp_path / "ft")
    tuner = Finetuner(cfg, SINGLE, tmp_path / "ft")
    state = tuner.state()
    state["world_size"] = 2
    tuner.ckpt.save(state, step=3, epoch=0)
    with pytest.raises(CheckpointError, match="world size 2"):
        Finetuner(cfg, SINGLE, tmp_path / "ft").resume()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_paths(amp: str, shards: Path, tmp_path: Path) -> None:
    # CUDA runs bf16 (or fp16 + grad scaler); the same code paths run here under CPU autocast.
    from personvit.checkpoint import load_checkpoint, resolve_checkpoint_path
    from personvit.engine.finetune import run

    torch.set_num_threads(1)
    result = run(_cfg(shards, tmp_path / "ft", "train.epochs=2", f"train.amp={amp}", "run.log_every_steps=1"))
    assert 0.0 <= result["mAP"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 4 and all(0 < r["loss"] < 20 for r in rows)
    scaler = load_checkpoint(resolve_checkpoint_path(tmp_path / "ft"))["state"]["scaler"]
    if amp == "fp16":
        assert 0 < scaler["scale"] <= 2.0**16, "a live grad scaler, saved for resume"
    else:
        assert scaler == {}


def test_impossible_pk_batch_is_a_config_error(shards: Path, tmp_path: Path) -> None:
    from personvit.config.core import ConfigError

    with pytest.raises(ConfigError, match=r"train.num_ids=300.*20 identities"):
        Finetuner(_cfg(shards, tmp_path / "ft", "train.num_ids=300"), SINGLE, tmp_path / "ft")


def test_non_finite_loss_stops_in_one_line_and_keeps_the_last_checkpoint(shards: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from personvit.checkpoint import load_checkpoint

    run_dir = tmp_path / "ft"
    base = [sys.executable, "-m", "personvit", "finetune", str(TINY_CONFIG), f"data.shards={shards}",
            f"run.dir={run_dir}", *SMALL, "train.warmup_epochs=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # One sane epoch leaves a checkpoint; resuming into a second epoch with an absurd learning rate
    # blows the weights up within a step or two.
    subprocess.run([*base, "train.epochs=1"], check=True, capture_output=True, timeout=300, env=env)
    good = CheckpointManager(run_dir / "checkpoints").latest()
    good_step = load_checkpoint(good)["step"]
    r = subprocess.run([*base, "train.epochs=2", "train.base_lr=1e12", "--allow-change", "train.base_lr"],
                       capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("personvit finetune: error: non-finite loss at step "), last
    assert "Traceback" not in r.stderr and f"last checkpoint with finite weights: {good}" in last
    assert int(last.split("at step ")[1].split()[0]) > good_step
    # Nothing was saved from the diverged steps: `latest` is still the good, loadable checkpoint.
    assert CheckpointManager(run_dir / "checkpoints").latest() == good
    assert load_checkpoint(good)["step"] == good_step
