"""`personvit-submit pack`: `shard-tools pack` split over a job array, then one merge job.

Task i of N runs `shard-tools pack SOURCE SRC OUT --array-index i --array-count N` (shard_tools
splits the work deterministically and writes its part); a merge job that depends on the whole array
(`afterok`) writes `manifest.json`. With the local executor the merge runs once the array is done.
Logs go to `<OUT>.logs/<job id>/`, beside the shard folder rather than inside it, so the shard set
stays exactly what the contract says it holds.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from slurm.jobs import CommandJob
from slurm.launch import Submission, absolute_folder, render_sbatch, submit
from slurm.profiles import load_profile
from slurm.recipes import split_overrides

ENTRY = "shard_tools.cli:main"


@dataclass
class PackSubmission:
    """The packing array and the merge job that follows it."""

    array: Submission
    merge: Submission
    out_dir: Path


def submit_pack(source: str, src: str, out_dir: str, array_count: int, pack_args: str, overrides: list[str],
                cluster: str, parallel: int | None = None, dry_run: bool = False, out=None) -> PackSubmission | None:
    """Submit the packing array and its merge job.

    Args:
        source: shard_tools source type (`luperson`, `market1501`, ...).
        src: the raw dataset folder.
        out_dir: the shard folder.
        array_count: array tasks.
        pack_args: further `shard-tools pack` options as one shell-quoted string (e.g. "--maxcount 5000").
        overrides: `cluster.key=value` profile overrides.
        cluster: profile name.
        parallel: array tasks running at once (default: the profile's `array_parallelism`).
        dry_run: print the sbatch script and the task command lines; submit nothing.
    """
    out = out or sys.stdout
    if array_count < 1:
        raise ValueError(f"--array-count must be >= 1, got {array_count}")
    cluster_over, recipe_over = split_overrides(overrides)
    if recipe_over:
        raise ValueError(f"pack takes only cluster.key=value overrides, got {recipe_over}")
    if parallel is not None:
        cluster_over.append(f"array_parallelism={parallel}")
    profile = load_profile(cluster, cluster_over)
    profile.check_request()
    out_path = absolute_folder(out_dir)
    base = ["pack", source, str(absolute_folder(src)), str(out_path), *shlex.split(pack_args)]
    argvs = [[*base, "--array-index", str(i), "--array-count", str(array_count)] for i in range(array_count)]
    logs = out_path.parent / f"{out_path.name}.logs"
    if dry_run:
        print(f"# pack array of {array_count} tasks, then `shard-tools merge {out_path}` (dry run)", file=out)
        for argv in argvs:
            print("#   shard-tools " + shlex.join(argv), file=out)
        if profile.executor == "slurm":
            print(render_sbatch(profile, logs / "%j", "personvit-pack", [], array_count if array_count > 1 else None),
                  file=out)
        return None
    meta = {"kind": "pack", "source": source, "src": src, "out": str(out_path)}
    array = submit(profile, logs / "%j", "personvit-pack", [CommandJob(ENTRY, a) for a in argvs], meta=meta)
    merge_job = CommandJob(ENTRY, ["merge", str(out_path)])
    if profile.executor == "slurm":
        merge = submit(profile, logs / "%j", "personvit-pack-merge", [merge_job], meta=meta,
                       extra={"dependency": f"afterok:{array.job_id}"})
    else:
        for job in array.jobs:
            job.result()
        merge = submit(profile, logs / "%j", "personvit-pack-merge", [merge_job], meta=meta)
    print(f"submitted pack array {array.job_id} ({array_count} tasks) and merge job {merge.job_id}: {out_path}",
          file=out)
    return PackSubmission(array=array, merge=merge, out_dir=out_path)
