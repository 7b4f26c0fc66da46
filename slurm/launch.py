"""Turning (profile, callable) into a submitit executor, an sbatch script, and a submitted job.

The dry run and the real submission render the script from the same parameter dict through
submitit's own `_make_sbatch_string`, so `--dry-run` prints exactly what `sbatch` would receive.
Jobs are submitted held and released once submitit has created the run folder: Slurm opens the
job's log files at start and cannot create their folder, and the local test scheduler starts a job
within milliseconds of `sbatch` returning.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from personvit.config.core import ConfigError
from slurm.profiles import ClusterProfile, check_partition, slurm_parameters

SOURCE_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_PACKAGES = ("personvit", "shard_tools", "slurm")


class SubmissionError(RuntimeError):
    """sbatch (or scontrol release) refused the job; the message holds the command and its output."""


@dataclass
class Submission:
    """What `submit` sent: submitit jobs (one per array task) and where their runs live."""

    jobs: list[submitit.Job]
    folder: Path  # the submitit folder, possibly with %j / %A_%a still in it
    job_id: str  # the job id, or the array's id

    def run_dirs(self) -> list[Path]:
        return [job.paths.folder for job in self.jobs]


def submitit_command(folder: Path, python: str | None = None) -> str:
    """The command line submitit puts at the end of the sbatch script."""
    python = python or shlex.quote(sys.executable)
    return " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])


def render_sbatch(profile: ClusterProfile, folder: Path, job_name: str, setup: list[str] = (),
                  array_size: int | None = None, python: str | None = None) -> str:
    """The sbatch script submitit would submit for this profile (no Slurm needed).

    Args:
        profile: the cluster profile.
        folder: submitit folder (absolute; may contain `%j`).
        job_name: Slurm job name.
        setup: extra shell lines before the job (e.g. the code snapshot's PYTHONPATH).
        array_size: number of array tasks, None for a single job.
        python: the job's interpreter command (see `job_python`).
    """
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(profile, job_name, list(setup))
    return _make_sbatch_string(command=submitit_command(folder, python), folder=folder, map_count=array_size, **params)


def snapshot_code(runs_root: Path) -> Path:
    """Copy the python packages into `<runs_root>/.code/<stamp>` and return that folder.

    A requeued job starts again from its sbatch script; with PYTHONPATH pointing here it imports the
    code it was submitted with, not whatever the checkout holds by then.
    """
    dest = runs_root / ".code" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in SNAPSHOT_PACKAGES:
        src = SOURCE_ROOT / pkg
        if src.is_dir():
            shutil.copytree(src, dest / pkg, ignore=ignore)
    if (SOURCE_ROOT / "configs").is_dir():
        shutil.copytree(SOURCE_ROOT / "configs", dest / "configs", ignore=ignore)
    return dest


def snapshot_setup(snapshot: Path) -> list[str]:
    return [f"export PYTHONPATH={shlex.quote(str(snapshot))}${{PYTHONPATH:+:$PYTHONPATH}}"]


def job_python(snapshot: bool) -> str | None:
    """The interpreter command of the job; None = submitit's default (this interpreter).

    `python -m` puts the working directory (usually the checkout the job was submitted from) first
    on sys.path, ahead of PYTHONPATH; with a snapshot, `-P` (Python >= 3.11) drops it so the
    snapshot wins.
    """
    if snapshot and sys.version_info >= (3, 11):
        return f"{shlex.quote(sys.executable)} -P"
    return None


def build_executor(profile: ClusterProfile, folder: Path, job_name: str, setup: list[str] = (),
                   extra: dict[str, Any] | None = None, python: str | None = None) -> submitit.Executor:
    """A submitit executor for the profile: SlurmExecutor, or LocalExecutor for `executor: local`.

    Args:
        extra: more SlurmExecutor parameters (e.g. `dependency`); ignored by the local executor.
        python: the job's interpreter command (see `job_python`).
    """
    if profile.executor == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=profile.max_requeues)
        params: dict[str, Any] = dict(timeout_min=profile.timeout_min, tasks_per_node=profile.tasks_per_node,
                                      gpus_per_node=profile.gpus_per_node, signal_delay_s=profile.signal_delay_s)
        if setup or profile.setup:
            params["setup"] = list(profile.setup) + list(setup)
        ex.update_parameters(**params)
        return ex
    if shutil.which("sbatch") is None:
        raise SubmissionError("sbatch not found on PATH: submit from a Slurm login node, use --dry-run, "
                              "or `--cluster local` to run here without Slurm")
    ex = submitit.SlurmExecutor(folder, max_num_timeout=profile.max_requeues, python=python)
    ex.update_parameters(**slurm_parameters(profile, job_name, list(setup)), **(extra or {}))
    return ex


def _release(job_id: str) -> None:
    cmd = ["scontrol", "release", job_id]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SubmissionError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}")


def submit(profile: ClusterProfile, folder: Path, job_name: str, callables: list[Any],
           setup: list[str] = (), meta: dict[str, Any] | None = None,
           extra: dict[str, Any] | None = None) -> Submission:
    """Submit one callable as a job, or several as one job array.

    Args:
        profile: the cluster profile (checked against the cluster before anything is sent).
        folder: submitit folder; `%j` (arrays: `%A_%a`) names the run folder after the job.
        job_name: Slurm job name.
        callables: one callable, or one per array task (parallelism: `profile.array_parallelism`).
        setup: extra sbatch setup lines.
        meta: written as `submission.json` into each run folder (what was submitted, how).
        extra: more SlurmExecutor parameters (e.g. `dependency="afterok:123"`).
    Raises:
        ConfigError: an impossible request (too many GPUs, unknown partition).
        SubmissionError: sbatch refused; the message holds the command and sbatch's output verbatim.
    """
    profile.check_request()
    if profile.executor == "slurm":
        check_partition(profile)
    ex = build_executor(profile, folder, job_name, list(setup), extra, job_python(profile.snapshot_code))
    try:
        if len(callables) == 1:
            jobs = [ex.submit(callables[0])]
        else:
            with ex.batch():
                jobs = [ex.submit(c) for c in callables]
    except FailedJobError as e:
        cause = e.__cause__
        cmd = " ".join(map(str, cause.cmd)) if isinstance(cause, subprocess.CalledProcessError) else "sbatch"
        code = f" (exit {cause.returncode})" if isinstance(cause, subprocess.CalledProcessError) else ""
        raise SubmissionError(f"`{cmd}` failed{code}:\n{str(e).strip()}") from None
    except FailedSubmissionError as e:
        raise SubmissionError(str(e)) from None
    job_id = jobs[0].job_id.split("_")[0] if len(jobs) > 1 else jobs[0].job_id
    for job in jobs:
        job.paths.folder.mkdir(parents=True, exist_ok=True)
        info = {"job_id": job.job_id, "array_job_id": job_id if len(jobs) > 1 else None, "name": job_name,
                "executor": profile.executor, "submitted": time.time(), **(meta or {})}
        (job.paths.folder / "submission.json").write_text(json.dumps(info, indent=1))
    if profile.executor == "slurm" and profile.use_hold:
        _release(job_id)
    return Submission(jobs=jobs, folder=folder, job_id=job_id)


def absolute_folder(path: str | Path) -> Path:
    """Absolute path without resolving `%j` patterns or symlinks."""
    return Path(path).expanduser().absolute()


def reject_pattern_free_array(folder: Path, n: int) -> None:
    if n > 1 and "%j" not in str(folder) and "%a" not in str(folder):
        raise ConfigError(f"an array of {n} tasks needs '%j' (or '%A_%a') in its folder, got {folder}")
