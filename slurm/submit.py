"""`personvit-submit`: send pretraining, fine-tuning, sweeps and shard packing to Slurm.

    personvit-submit pretrain CONFIG --cluster PROFILE [--dry-run] [--wait] [key=value ...]
    personvit-submit finetune CONFIG --cluster PROFILE [--dry-run] [--wait] [key=value ...]
    personvit-submit sweep CONFIG --cluster PROFILE --checkpoints RUN|CKPT ... --datasets SHARDS ...
    personvit-submit pack SOURCE SRC OUT --cluster PROFILE --array-count N [pack options]
    personvit-submit status [RUN_DIR ...]
    personvit-submit collect SWEEP_DIR

`key=value` overrides go to the recipe; `cluster.key=value` to the cluster profile
(e.g. `cluster.partition=gpu cluster.nodes=2`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from personvit.config.core import ConfigError
from slurm.launch import (
    Submission,
    SubmissionError,
    absolute_folder,
    job_python,
    render_sbatch,
    snapshot_code,
    snapshot_setup,
    submit,
)
from slurm.profiles import ClusterProfile, load_profile
from slurm.recipes import resolve_recipe, split_overrides


def input_problems(kind: str, recipe: dict[str, Any]) -> list[str]:
    """What the job would die on at its start, found on the login node instead of after the queue wait.

    Args:
        kind: `pretrain` or `finetune`.
        recipe: the resolved recipe (`data.shards` must hold a readable manifest; for fine-tuning,
            `model.init`, when set, must exist).
    """
    from shard_tools.manifest import read_manifest  # numpy and the dataset sources: not for --help
    from shard_tools.sources.base import SourceError

    problems = []
    shards = (recipe.get("data") or {}).get("shards")
    if not shards:
        problems.append("data.shards is not set")
    else:
        try:
            read_manifest(Path(shards).expanduser())
        except SourceError as e:
            problems.append(f"data.shards: {e}")
        except OSError as e:
            problems.append(f"data.shards: cannot read {e.filename or shards}: {e.strerror}")
    init = (recipe.get("model") or {}).get("init")
    if kind == "finetune" and init and not Path(init).expanduser().exists():
        problems.append(f"model.init: {init} does not exist")
    return problems


def run_folder(profile: ClusterProfile, kind: str, recipe: dict[str, Any]) -> Path:
    """`run.dir` when the recipe sets it, else `<runs_root>/<kind>-%j` (the job id names the run)."""
    run_dir = (recipe.get("run") or {}).get("dir")
    if run_dir:
        return absolute_folder(run_dir)
    if profile.executor == "local":
        # submitit's local executor creates its folder with `%j` unexpanded: name the run by time.
        return absolute_folder(Path(profile.runs_root) / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    return absolute_folder(Path(profile.runs_root) / f"{kind}-%j")


def submit_training(kind: str, config: str, overrides: Sequence[str], cluster: str, dry_run: bool = False,
                    entry: str | None = None, out=None, allow_change: Sequence[str] = ()) -> Submission | None:
    """Validate, render and submit one pretrain / finetune job.

    Args:
        kind: `pretrain` or `finetune`.
        config: the recipe YAML.
        overrides: `key=value` (recipe) and `cluster.key=value` (profile) overrides.
        cluster: profile name or YAML path.
        dry_run: print the sbatch script and the resolved recipe; submit nothing.
        entry: `module:function` run in the job instead of the engine (tests, custom trainers);
            the recipe is then merged but not validated against the engine's schema.
        allow_change: `--allow-change` values passed to the engine (keys a resume may change).
    Returns:
        The submission, or None on a dry run.
    """
    out = out or sys.stdout
    cluster_over, recipe_over = split_overrides(overrides)
    profile = load_profile(cluster, cluster_over)
    profile.check_request()
    config = str(Path(config).expanduser().absolute())
    recipe = resolve_recipe(kind, config, recipe_over, validate=entry is None)
    problems = input_problems(kind, recipe) if entry is None else []  # a custom entry has its own inputs
    if problems and not dry_run:
        raise ConfigError("; ".join(problems))
    for problem in problems:  # a dry run may be drafted before the data exists: say it, go on
        print(f"personvit-submit {kind}: warning: {problem}", file=sys.stderr)
    folder = run_folder(profile, kind, recipe)
    job_name = f"personvit-{kind}"
    setup: list[str] = []
    if dry_run:
        if profile.snapshot_code:
            setup = snapshot_setup(absolute_folder(Path(profile.runs_root) / ".code" / "<stamp>"))
        _print_dry_run(profile, folder, job_name, setup, recipe, out)
        return None
    if profile.snapshot_code:
        setup = snapshot_setup(snapshot_code(absolute_folder(profile.runs_root)))
    from slurm.jobs import ENTRY_POINTS, TrainJob  # imports torch: not for --help or a dry run

    job = TrainJob(kind, config, recipe_over, run_dir=None if "%" in str(folder) else str(folder),
                   entry=entry or ENTRY_POINTS[kind], max_requeues=profile.max_requeues, allow_change=allow_change)
    meta = {"kind": kind, "config": config, "overrides": list(overrides), "cluster": cluster}
    sub = submit(profile, folder, job_name, [job], setup, meta)
    print(f"submitted {kind} job {sub.job_id}: run folder {sub.run_dirs()[0]}", file=out)
    return sub


def _print_dry_run(profile: ClusterProfile, folder: Path, job_name: str, setup: list[str],
                   recipe: dict[str, Any], out, array_size: int | None = None) -> None:
    if profile.executor == "local":
        print(f"# executor: local (no sbatch; submitit runs the job as a child process)\n# run folder: {folder}",
              file=out)
    else:
        print("# ---- sbatch script (dry run: nothing submitted) ----", file=out)
        print(render_sbatch(profile, folder, job_name, setup, array_size, job_python(profile.snapshot_code)), file=out)
    print("# ---- resolved config ----", file=out)
    print(yaml.safe_dump(recipe, sort_keys=False).rstrip(), file=out)


def _wait(sub: Submission, out) -> int:
    """Block until every job leaves the queue; 0 only when all completed."""
    status = 0
    for job in sub.jobs:
        try:
            job.result()
            print(f"job {job.job_id}: completed", file=out)
        except Exception as e:  # noqa: BLE001 - report every failure, not only the first
            status = 1
            first = str(e).strip().splitlines()
            print(f"job {job.job_id}: {job.state} ({first[-1] if first else type(e).__name__})", file=out)
    return status


# --------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="personvit-submit", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for kind in ("pretrain", "finetune"):
        p = sub.add_parser(kind, help=f"submit one {kind} job")
        p.add_argument("config", help="recipe YAML")
        p.add_argument("--allow-change", dest="allow_change", action="append", default=None, metavar="KEYS",
                       help="comma-separated config keys a resume of the run folder may change (as for "
                            "`personvit pretrain`)")
        _common(p)
    p = sub.add_parser("sweep", help="fine-tune checkpoints x datasets as one job array, then tabulate")
    p.add_argument("config", help="fine-tuning recipe YAML")
    p.add_argument("--checkpoints", nargs="+", required=True,
                   help="checkpoint files, or pretraining run folders (their keep-forever checkpoints)")
    p.add_argument("--every-epochs", type=int, default=0, help="with run folders: epochs that are multiples of N")
    p.add_argument("--datasets", nargs="+", required=True, help="labeled shard sets (data.shards)")
    p.add_argument("--out", help="sweep folder (default: <runs_root>/sweep-<stamp>)")
    p.add_argument("--parallel", type=int, help="array tasks running at once (default: the profile's)")
    _common(p)
    p = sub.add_parser("pack", help="`shard-tools pack` as a job array, then merge the manifests")
    p.add_argument("source")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--array-count", type=int, required=True, help="array tasks")
    p.add_argument("--parallel", type=int, help="array tasks running at once")
    p.add_argument("--pack-args", default="", help="more `shard-tools pack` options, quoted")
    _common(p)
    p = sub.add_parser("status", help="job state, restarts, latest checkpoint and metrics of runs")
    p.add_argument("run_dirs", nargs="*", help="run folders (default: every run under ./runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("collect", help="tabulate a sweep's results.json files (markdown + CSV)")
    p.add_argument("sweep_dir")
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, help="profile in configs/cluster/ (a100_8x8, local, localhost_slurm)")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script and resolved config only")
    p.add_argument("--wait", action="store_true", help="wait for the job(s) and report how they ended")
    p.add_argument("--entry", help="module:function(argv) to run instead of the engine (custom trainers); "
                                   "the recipe is then not validated against the engine's schema")
    p.add_argument("overrides", nargs="*", help="key=value (recipe) and cluster.key=value (profile)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `personvit-submit` console script."""
    parser = _parser()
    # key=value overrides may come before or after the options: argparse leaves the later ones over.
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    out = sys.stdout
    try:
        if args.cmd in ("pretrain", "finetune"):
            sub = submit_training(args.cmd, args.config, args.overrides, args.cluster, args.dry_run,
                                  entry=args.entry, out=out, allow_change=args.allow_change or ())
            return _wait(sub, out) if sub is not None and args.wait else 0
        if args.cmd == "sweep":
            from slurm.sweep import submit_sweep

            sub = submit_sweep(args.config, args.checkpoints, args.datasets, args.overrides, args.cluster,
                               out_dir=args.out, every_epochs=args.every_epochs, parallel=args.parallel,
                               dry_run=args.dry_run, out=out)
            if sub is not None and args.wait:
                status = _wait(sub, out)
                from slurm.sweep import collect

                collect(sub.folder.parent, out=out)
                return status
            return 0
        if args.cmd == "pack":
            from slurm.pack import submit_pack

            packed = submit_pack(args.source, args.src, args.out, args.array_count, args.pack_args, args.overrides,
                                 args.cluster, parallel=args.parallel, dry_run=args.dry_run, out=out)
            if packed is None or not args.wait:
                return 0
            return _wait(packed.array, out) or _wait(packed.merge, out)
        if args.cmd == "status":
            from slurm.status import main as status_main

            return status_main(args.run_dirs, as_json=args.json, out=out)
        if args.cmd == "collect":
            from slurm.sweep import collect

            collect(Path(args.sweep_dir), out=out)
            return 0
    except (ConfigError, SubmissionError, ValueError) as e:
        print(f"personvit-submit {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
