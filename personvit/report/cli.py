"""`personvit report RUN_DIR|SWEEP_DIR [--out DIR]`: PNG curves and `summary.md` of a run or a sweep.

A pretraining run folder (`metrics.jsonl`): loss terms, learning rate, teacher entropy and, when
the kNN monitor ran, retrieval mAP / Rank-1 against the step. A sweep folder (`sweep.json`,
`personvit-submit sweep`): mAP and Rank-1 of the fine-tuned models against the pretraining epoch of
their starting checkpoint, one line per dataset (the paper's Fig. 3). Output: `<folder>/report/`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from personvit import cli_args
from personvit.config.core import ConfigError
from personvit.report.chart import Series, line_chart
from personvit.report.sweep_table import METRICS, PLAN_NAME, markdown_table, read_sweep

METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.md"
KNN_KEYS = ("knn_cls_map", "knn_cls_rank1", "knn_patch_map", "knn_patch_rank1")
# (file, title, y label, metrics.jsonl keys) of the run report's charts.
RUN_CHARTS = (
    ("loss.png", "training loss", "loss", ("loss", "dino", "mim")),
    ("lr.png", "learning rate", "lr", ("lr",)),
    ("teacher_entropy.png", "teacher entropy (nats)", "entropy", ("teacher_entropy", "teacher_mean_entropy")),
    ("knn.png", "kNN retrieval of the teacher (monitor)", "fraction", KNN_KEYS),
)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl in step order, one per step (the last one logged wins); cut lines skipped."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            by_step.setdefault(row["step"], {}).update(row)
    return [by_step[s] for s in sorted(by_step)]


def _number(v: Any) -> float | None:
    # Non-finite values are logged as strings ("nan"); they are gaps, not points.
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def metric_series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key` over the rows that hold a finite value of it."""
    pairs = [(r["step"], _number(r.get(key))) for r in rows]
    pairs = [(s, v) for s, v in pairs if v is not None]
    return [float(s) for s, _ in pairs], [v for _, v in pairs]


def run_report(run_dir: Path, out: Path) -> list[Path]:
    """Charts and `summary.md` of a pretraining run folder; returns the written files."""
    rows = read_metrics(run_dir / METRICS_NAME)
    if not rows:
        raise ConfigError(f"{run_dir / METRICS_NAME}: no metrics logged yet")
    out.mkdir(parents=True, exist_ok=True)
    written, images = [], []
    for name, title, ylabel, keys in RUN_CHARTS:
        series: list[Series] = [(k, *metric_series(rows, k)) for k in keys]
        if not any(xs for _, xs, _ in series):
            continue  # e.g. no kNN monitor in this run
        line_chart(series, title, "step", ylabel).save(out / name)
        written.append(out / name)
        images.append(name)
    lines = [f"# Pretraining run `{run_dir}`", "",
             f"{len(rows)} logged steps, last step {rows[-1]['step']} (epoch {rows[-1].get('epoch', '-')}).", "",
             "| metric | first | last | min | max |", "|---|---|---|---|---|"]
    for _, _, _, keys in RUN_CHARTS[:3]:
        for k in keys:
            _, ys = metric_series(rows, k)
            if ys:
                lines.append(f"| {k} | {ys[0]:.4g} | {ys[-1]:.4g} | {min(ys):.4g} | {max(ys):.4g} |")
    knn_rows = [r for r in rows if any(_number(r.get(k)) is not None for k in KNN_KEYS)]
    if knn_rows:
        lines += ["", "## kNN monitor (teacher backbone, %)", "",
                  "| step | epoch | " + " | ".join(KNN_KEYS) + " |", "|" + "---|" * (2 + len(KNN_KEYS))]
        for r in knn_rows:
            cells = [f"{100 * r[k]:.1f}" if _number(r.get(k)) is not None else "-" for k in KNN_KEYS]
            lines.append(f"| {r['step']} | {r.get('epoch', '-')} | " + " | ".join(cells) + " |")
    lines += ["", *[f"![{name}]({name})" for name in images]]
    (out / SUMMARY_NAME).write_text("\n".join(lines) + "\n")
    return [*written, out / SUMMARY_NAME]


def sweep_report(sweep_dir: Path, out: Path) -> list[Path]:
    """mAP / Rank-1 vs pretraining epoch per dataset and `summary.md` of a sweep folder."""
    rows = read_sweep(sweep_dir)
    done = sorted((r for r in rows if r["status"] == "done" and r["epoch"] is not None),
                  key=lambda r: (r["dataset"], r["epoch"]))
    if not done:
        raise ConfigError(f"{sweep_dir}: no task has results yet ({len(rows)} planned)")
    out.mkdir(parents=True, exist_ok=True)
    datasets = list(dict.fromkeys(r["dataset"] for r in done))
    written, images = [], []
    for metric, label in (("mAP", "mAP"), ("rank1", "Rank-1")):
        series: list[Series] = []
        for ds in datasets:
            pts = [(r["epoch"], 100 * r[metric]) for r in done if r["dataset"] == ds and r[metric] is not None]
            series.append((ds, [float(e) for e, _ in pts], [v for _, v in pts]))
        name = f"{metric.lower()}_vs_epoch.png"
        line_chart(series, f"fine-tuned {label} vs pretraining epoch", "pretraining epoch", f"{label} (%)").save(out / name)
        written.append(out / name)
        images.append(name)
    lines = [f"# Sweep `{sweep_dir}`", "", f"{len(done)}/{len(rows)} tasks with results.", "",
             "| dataset | best epoch (mAP) | mAP (%) | Rank-1 (%) |", "|---|---|---|---|"]
    for ds in datasets:
        scored = [r for r in done if r["dataset"] == ds and r["mAP"] is not None]
        best = max(scored, key=lambda r: (r["mAP"], -r["epoch"]), default=None)  # earliest epoch on a tie
        if best is not None:
            rank1 = "-" if best["rank1"] is None else f"{100 * best['rank1']:.1f}"
            lines.append(f"| {ds} | {best['epoch']} | {100 * best['mAP']:.1f} | {rank1} |")
    lines += ["", markdown_table(rows, ["task", "checkpoint", "epoch", "dataset", *METRICS, "status"]), "",
              *[f"![{name}]({name})" for name in images]]
    (out / SUMMARY_NAME).write_text("\n".join(lines) + "\n")
    return [*written, out / SUMMARY_NAME]


def report(folder: str | Path, out: str | Path | None = None) -> list[Path]:
    """The report of a run or sweep folder into `out` (default `<folder>/report`); returns the files.

    Raises:
        ConfigError: the folder is neither (no metrics.jsonl, no sweep.json), or holds nothing yet.
    """
    folder = Path(folder)
    dest = Path(out) if out is not None else folder / "report"
    if (folder / PLAN_NAME).is_file():
        return sweep_report(folder, dest)
    if (folder / METRICS_NAME).is_file():
        return run_report(folder, dest)
    raise ConfigError(f"{folder}: neither a pretraining run folder ({METRICS_NAME}) nor a sweep folder ({PLAN_NAME})")


def main(argv: Sequence[str]) -> int:
    """Entry of `personvit report`."""
    args = cli_args.report().parse_args(list(argv))
    files = report(args.folder, args.out)
    for path in files:
        print(path)
    print(f"report: {len(files)} files in {files[-1].parent}", file=sys.stderr)
    return 0
