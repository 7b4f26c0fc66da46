"""`personvit report` on real folders: a tiny pretraining run (kNN monitor on) and a sweep of real results.

The sweep is laid out as `personvit-submit sweep` leaves it (slurm/sweep.py: `sweep.json` with the
tasks planned from the run's real checkpoint markers, one `<array id>_<i>/results.json` per task),
with each task's results written by `personvit evaluate` of that checkpoint's teacher on a real
labeled shard set (retrieval without fine-tuning stands in for the fine-tuning jobs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from personvit import preemption  # noqa: E402
from personvit.checkpoint import CheckpointManager  # noqa: E402
from personvit.config.core import ConfigError, load_config  # noqa: E402
from personvit.config.finetune import EvaluateConfig  # noqa: E402
from personvit.config.pretrain import PretrainConfig  # noqa: E402
from personvit.engine import evaluate  # noqa: E402
from personvit.engine.pretrain import run as pretrain  # noqa: E402
from personvit.report.chart import nice_ticks  # noqa: E402
from personvit.report.cli import report  # noqa: E402
from slurm.sweep import plan_tasks  # noqa: E402
from tests.support.pretrain import SMALL, TINY_CONFIG, subprocess_env, synthetic_lup_shards  # noqa: E402
from tests.support.reid_data import TINY_CONFIG as FT_CONFIG  # noqa: E402
from tests.support.reid_data import reid_shards  # noqa: E402

CHART_SIZE = (720, 420)
EVAL_MODEL = ["model.patch_size=8", "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
              "data.img_size=[64,32]", "run.progress_every_s=1000", "eval.save_features=false"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> list[Path]:
    return [reid_shards(tmp_path_factory, identities=12, cameras=2, seed=s) for s in (1, 2)]


@pytest.fixture(scope="module")
def pretrain_run(datasets, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report-run")
    lup = synthetic_lup_shards(root / "lup", images=64)
    run_dir = root / "run"
    cfg = load_config(PretrainConfig, TINY_CONFIG, [
        f"data.shards={lup}", f"run.dir={run_dir}", *SMALL, "train.epochs=3", "run.log_every_steps=1",
        "checkpoint.keep_every_epochs=1", "monitor.every_epochs=1", f"monitor.shards={datasets[0]}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    preemption.reset()
    try:
        pretrain(cfg)
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.fixture(scope="module")
def sweep(pretrain_run, datasets) -> Path:
    """checkpoints of epochs 1..3 x 2 datasets, each task's results.json from `personvit evaluate`."""
    folder = pretrain_run.parent / "sweep"
    ckpts = [p for p in CheckpointManager(pretrain_run / "checkpoints", is_main=False).committed()
             if json.loads(p.with_suffix(".commit").read_text()).get("keep")]
    tasks = plan_tasks(ckpts, [str(d) for d in datasets])
    run_dirs = [folder / f"77_{t.index}" for t in tasks]
    for task, run_dir in zip(tasks, run_dirs):
        evaluate.run(load_config(EvaluateConfig, FT_CONFIG, [
            f"data.shards={task.dataset}", f"model.init={task.checkpoint}", f"run.dir={run_dir}", *EVAL_MODEL]))
    plan = {"config": str(FT_CONFIG), "overrides": [], "cluster": "local", "tasks": [asdict(t) for t in tasks],
            "array_job_id": "77", "run_dirs": [str(p) for p in run_dirs]}
    (folder / "sweep.json").write_text(json.dumps(plan, indent=1))
    return folder


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # a full decode, not just the header
        return im.size


def test_run_report_draws_the_curves_and_tables_the_numbers(pretrain_run):
    files = report(pretrain_run)
    out = pretrain_run / "report"
    assert {p.name for p in files} == {"loss.png", "lr.png", "teacher_entropy.png", "knn.png", "summary.md"}
    for name in ("loss.png", "lr.png", "teacher_entropy.png", "knn.png"):
        assert _png(out / name) == CHART_SIZE
    rows = [json.loads(line) for line in (pretrain_run / "metrics.jsonl").read_text().splitlines()]
    md = (out / "summary.md").read_text()
    losses = [r["loss"] for r in rows if "loss" in r]
    assert f"| loss | {losses[0]:.4g} | {losses[-1]:.4g} | {min(losses):.4g} | {max(losses):.4g} |" in md
    knn = [r for r in rows if "knn_cls_map" in r]
    assert len(knn) == 3  # every epoch
    for r in knn:
        assert f"| {r['step']} | {r['epoch']} | {100 * r['knn_cls_map']:.1f} | {100 * r['knn_cls_rank1']:.1f} |" in md


def test_sweep_report_plots_map_and_rank1_against_the_epoch(sweep, tmp_path):
    files = report(sweep, tmp_path / "out")
    assert {p.name for p in files} == {"map_vs_epoch.png", "rank1_vs_epoch.png", "summary.md"}
    assert _png(tmp_path / "out" / "map_vs_epoch.png") == CHART_SIZE
    assert _png(tmp_path / "out" / "rank1_vs_epoch.png") == CHART_SIZE
    md = (tmp_path / "out" / "summary.md").read_text()
    plan = json.loads((sweep / "sweep.json").read_text())
    assert sorted({t["epoch"] for t in plan["tasks"]}) == [1, 2, 3]
    for task, run_dir in zip(plan["tasks"], plan["run_dirs"]):
        res = json.loads((Path(run_dir) / "results.json").read_text())
        name = Path(task["dataset"]).parent.name
        row = f"| {task['index']} | {Path(task['checkpoint']).name} | {task['epoch']} | {name} | {100 * res['mAP']:.1f} | {100 * res['rank1']:.1f} |"
        assert row in md, row
    # The best epoch per dataset is the argmax of the results (the earliest one on a tie).
    for ds in {Path(t["dataset"]).parent.name for t in plan["tasks"]}:
        mine = [(json.loads((Path(d) / "results.json").read_text())["mAP"], t["epoch"])
                for t, d in zip(plan["tasks"], plan["run_dirs"]) if Path(t["dataset"]).parent.name == ds]
        best_map, best_epoch = max(mine, key=lambda m: (m[0], -m[1]))
        assert f"| {ds} | {best_epoch} | {100 * best_map:.1f} |" in md


def test_a_folder_with_neither_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="neither a pretraining run folder"):
        report(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "personvit", "report", str(tmp_path)], capture_output=True,
                          text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "neither a pretraining run folder" in proc.stderr


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 12.0), (14.9, 17.2), (1e-6, 2e-3), (5.0, 5.0), (-3.0, 0.7)])
def test_ticks_cover_the_data(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12
