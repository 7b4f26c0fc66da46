"""The rows of a fine-tuning sweep folder (`personvit-submit sweep`): its plan joined with each task's results.

Layout (slurm/sweep.py): `<sweep>/sweep.json` holds the tasks (index, checkpoint, dataset, epoch,
step) and, once submitted, `run_dirs`; each task's `results.json` lies in its run folder
(`<sweep>/<array id>_<index>` when `run_dirs` is absent). Shared by `personvit-submit sweep --collect`
and `personvit report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from personvit.config.core import ConfigError

PLAN_NAME = "sweep.json"
METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")


def dataset_name(path: str) -> str:
    """`/data/market/shards` -> `market`; `/data/market` -> `market`."""
    p = Path(path)
    return p.parent.name if p.name == "shards" else p.name


def read_sweep(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per task: task, checkpoint (file name), epoch, dataset, METRICS (fractions or None), status, run_dir.

    Args:
        sweep_dir: the sweep folder.
    Raises:
        ConfigError: no `sweep.json` there.
    """
    sweep_dir = Path(sweep_dir)
    plan_path = sweep_dir / PLAN_NAME
    if not plan_path.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep folder (no {PLAN_NAME})")
    try:
        plan = json.loads(plan_path.read_text())
        tasks = plan["tasks"]
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{plan_path}: not a sweep plan ({e})") from None
    run_dirs = plan.get("run_dirs") or [str(sweep_dir / f"{plan.get('array_job_id')}_{t['index']}") for t in tasks]
    rows = []
    for task, run_dir in zip(tasks, run_dirs):
        result_path = Path(run_dir) / "results.json"
        try:
            results = json.loads(result_path.read_text()) if result_path.is_file() else {}
        except ValueError:
            results = {}  # a results.json cut short counts as missing, like one not yet written
        row = {"task": task["index"], "checkpoint": Path(task["checkpoint"]).name, "epoch": task["epoch"],
               "dataset": dataset_name(task["dataset"]), "status": "done" if results else "missing"}
        row.update({m: results.get(m) for m in METRICS})
        row["run_dir"] = run_dir
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of `rows`; METRICS columns as percentages with one decimal, None as `-`."""
    def cell(v: Any, col: str) -> str:
        if v is None:
            return "-"
        return f"{100 * v:.1f}" if col in METRICS else str(v)

    head = [c + (" (%)" if c in METRICS else "") for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r[c], c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
