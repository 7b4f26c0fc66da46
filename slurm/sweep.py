"""Fine-tuning sweeps: pretraining checkpoints x datasets as one job array, then one results table.

The paper's Fig. 3 question (which pretraining epoch fine-tunes best) is one array: task i fine-tunes
checkpoint c on dataset d with `model.init=c data.shards=d`. The plan is written to
`<sweep dir>/sweep.json` before submission; each task's run folder is `<sweep dir>/<array id>_<i>`
(its logs inside); `collect` joins the plan with every `results.json` into `results.md` and
`results.csv` (tasks without results are listed as missing, not dropped).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from personvit.checkpoint import CheckpointManager
from personvit.config.core import ConfigError
from personvit.report.sweep_table import METRICS, PLAN_NAME, markdown_table, read_sweep
from slurm.jobs import ENTRY_POINTS, TrainJob
from slurm.launch import Submission, absolute_folder, render_sbatch, submit
from slurm.profiles import load_profile
from slurm.recipes import resolve_recipe, split_overrides


@dataclass(frozen=True)
class SweepTask:
    """One array task: fine-tune `checkpoint` on `dataset`."""

    index: int
    checkpoint: str
    dataset: str
    epoch: int | None
    step: int | None


def _marker(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads(ckpt.with_suffix(".commit").read_text())
    except (OSError, ValueError):
        return {}


def expand_checkpoints(items: list[str], every_epochs: int = 0) -> list[Path]:
    """Checkpoint files from files and run folders.

    Args:
        items: `ckpt-*.pt` files, pretraining run folders or their `checkpoints/` folders.
        every_epochs: from folders, the epoch-end checkpoints whose epoch is a multiple of N;
            0 = the keep-forever checkpoints plus the latest one.
    """
    out: list[Path] = []
    for item in items:
        path = Path(item).expanduser().absolute()
        if path.is_file():
            out.append(path)
            continue
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        manager = CheckpointManager(folder, is_main=False)
        found = manager.committed()
        if not found:
            raise ConfigError(f"sweep: no complete checkpoint in {path}")
        if every_epochs:
            chosen = [p for p in found if _marker(p).get("end_of_epoch") and _marker(p).get("epoch", 0) > 0
                      and _marker(p)["epoch"] % every_epochs == 0]
        else:
            chosen = [p for p in found if _marker(p).get("keep")] + [manager.latest()]
        if not chosen:
            raise ConfigError(f"sweep: no checkpoint in {path} at a multiple of {every_epochs} epochs")
        out.extend(dict.fromkeys(chosen))  # dedupe, keep order
    return out


def plan_tasks(checkpoints: list[Path], datasets: list[str]) -> list[SweepTask]:
    """The cross product, checkpoints outer (the order of the table)."""
    tasks = []
    for ckpt in checkpoints:
        marker = _marker(ckpt)
        for ds in datasets:
            tasks.append(SweepTask(len(tasks), str(ckpt), str(Path(ds).expanduser().absolute()),
                                   marker.get("epoch"), marker.get("step")))
    return tasks


def submit_sweep(config: str, checkpoints: list[str], datasets: list[str], overrides: list[str], cluster: str,
                 out_dir: str | None = None, every_epochs: int = 0, parallel: int | None = None,
                 dry_run: bool = False, entry: str | None = None, out=None) -> Submission | None:
    """Plan, validate and submit a sweep as one job array.

    Args:
        config: the fine-tuning recipe.
        checkpoints, every_epochs: see `expand_checkpoints`.
        datasets: labeled shard sets.
        overrides: recipe `key=value` and `cluster.key=value` overrides shared by every task.
        cluster: profile name.
        out_dir: the sweep folder (default `<runs_root>/sweep-<stamp>`).
        parallel: array tasks running at once (default: the profile's `array_parallelism`).
        dry_run: print the plan, the sbatch script and one task's recipe; submit nothing.
        entry: `module:function` to run instead of the fine-tuning engine.
    """
    out = out or sys.stdout
    cluster_over, recipe_over = split_overrides(overrides)
    if parallel is not None:
        cluster_over.append(f"array_parallelism={parallel}")
    profile = load_profile(cluster, cluster_over)
    profile.check_request()
    tasks = plan_tasks(expand_checkpoints(checkpoints, every_epochs), datasets)
    config = str(Path(config).expanduser().absolute())
    per_task = [[*recipe_over, f"model.init={t.checkpoint}", f"data.shards={t.dataset}"] for t in tasks]
    recipe = resolve_recipe("finetune", config, per_task[0], validate=entry is None)  # typos fail here
    sweep_dir = absolute_folder(out_dir or Path(profile.runs_root) / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    folder = sweep_dir / "%j"
    if dry_run:
        print(f"# sweep of {len(tasks)} tasks into {sweep_dir} (dry run: nothing submitted)", file=out)
        for t in tasks:
            print(f"#   task {t.index}: {t.checkpoint} (epoch {t.epoch}) on {t.dataset}", file=out)
        if profile.executor == "slurm":
            print(render_sbatch(profile, folder, "personvit-sweep", [], len(tasks)), file=out)
        import yaml

        print("# ---- task 0 resolved config ----\n" + yaml.safe_dump(recipe, sort_keys=False).rstrip(), file=out)
        return None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    jobs = [TrainJob("finetune", config, over, entry=entry or ENTRY_POINTS["finetune"],
                     max_requeues=profile.max_requeues) for over in per_task]
    plan = {"config": config, "overrides": list(overrides), "cluster": cluster, "tasks": [asdict(t) for t in tasks]}
    (sweep_dir / PLAN_NAME).write_text(json.dumps(plan, indent=1))
    sub = submit(profile, folder, "personvit-sweep", jobs, meta={"kind": "finetune", "sweep": str(sweep_dir)})
    plan["array_job_id"] = sub.job_id
    plan["run_dirs"] = [str(p) for p in sub.run_dirs()]
    (sweep_dir / PLAN_NAME).write_text(json.dumps(plan, indent=1))
    print(f"submitted sweep array {sub.job_id} ({len(tasks)} tasks, at most {profile.array_parallelism} at once): "
          f"{sweep_dir}", file=out)
    return sub


def collect(sweep_dir: str | Path, out=None) -> list[dict[str, Any]]:
    """Join the plan with each task's `results.json`; write `results.md` and `results.csv`.

    Returns:
        One row per task (metrics as fractions, None where the task has no results).
    """
    out = out or sys.stdout
    sweep_dir = Path(sweep_dir)
    rows = read_sweep(sweep_dir)
    columns = ["task", "checkpoint", "epoch", "dataset", *METRICS, "status", "run_dir"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    (sweep_dir / "results.csv").write_text(buf.getvalue())
    md = markdown_table(rows, columns[:-1])
    (sweep_dir / "results.md").write_text(md + "\n")
    print(md, file=out)
    missing = sum(r["status"] == "missing" for r in rows)
    print(f"\n{len(rows) - missing}/{len(rows)} tasks with results; table in {sweep_dir}/results.md, "
          f"{sweep_dir}/results.csv", file=out)
    return rows
