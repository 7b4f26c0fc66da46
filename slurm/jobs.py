"""The callables submitit runs inside a job: training (pretrain / finetune) and shard packing.

`TrainJob` wraps a `main(argv)` entry point (`personvit.engine.pretrain:main` by default):
  1. resolves the run folder (the submitit folder with the job id filled in, unless `run.dir` was
     given) and passes it as `run.dir=...`, so a requeued job finds its own checkpoints with no flags;
  2. sets up distributed from submitit's job environment (torchrun-style variables for
     personvit.distributed) and installs the preemption flag handler in front of submitit's;
  3. runs the entry; when it raises `Preempted` after the collective save (both trainers do, from
     engine/loop.py; or returns with the stop flag set, a stop after the loop), rank 0 hands over to submitit's own USR2 handler, which decides timed-out vs
     preempted, spends one requeue of the budget, writes the resubmission and calls
     `scontrol requeue`. Without that handler (a stop requested by code) it requeues itself.
Every attempt, stop, requeue and end goes to `<run dir>/restarts.jsonl` (slurm/restarts.py).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit

from personvit import preemption
from personvit.runlog import get_logger
from slurm import restarts

log = get_logger("slurm.jobs")

ENTRY_POINTS = {
    "pretrain": "personvit.engine.pretrain:main",
    "finetune": "personvit.engine.finetune:main",
}


class RequeueRefused(RuntimeError):
    """The run asked to be requeued but its requeue budget is spent."""


def load_entry(spec: str) -> Callable[[list[str]], Any]:
    """`module.path:function` -> the function."""
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"entry point {spec!r} is not of the form module:function")
    return getattr(importlib.import_module(module), name)


def _export_dist_env(env: submitit.JobEnvironment) -> None:
    """torchrun-style variables from submitit's view of the job (local executor and Slurm alike)."""
    if env.num_tasks <= 1 or "RANK" in os.environ:
        return
    os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank))
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = env.hostnames[0]
    if "MASTER_PORT" not in os.environ:
        from personvit.distributed import port_from_job_id

        os.environ["MASTER_PORT"] = str(port_from_job_id(env.job_id))


def _job_environment() -> submitit.JobEnvironment | None:
    try:
        return submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (a test calling the callable directly)
        return None


class TrainJob(submitit.helpers.Checkpointable):
    """One training run as a submitit callable (picklable: plain strings only).

    Args:
        kind: `pretrain` or `finetune` (names the run and the default entry point).
        config: path of the recipe YAML (absolute: the job may start in another directory).
        overrides: `key=value` config overrides.
        run_dir: the run folder, or None for the submitit folder of this job (`%j` filled in).
        entry: `module:function` taking argv; defaults to the engine of `kind`.
        max_requeues: restarts allowed; past it a stop ends the job as failed.
    """

    def __init__(self, kind: str, config: str, overrides: Sequence[str] = (), run_dir: str | None = None,
                 entry: str | None = None, max_requeues: int = 3, allow_change: Sequence[str] = ()):
        self.kind = kind
        self.config = str(config)
        self.overrides = list(overrides)
        self.run_dir = run_dir
        self.entry = entry or ENTRY_POINTS[kind]
        self.max_requeues = max_requeues
        self.allow_change = list(allow_change)

    def resolve_run_dir(self, env: submitit.JobEnvironment | None) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        if env is None:
            raise ValueError("run_dir must be given outside a submitit job")
        return env.paths.folder  # submitit's folder with the job id (or array ids) filled in

    def argv(self, run_dir: Path) -> list[str]:
        # --allow-change rides along on every start of the job: a requeue resumes the same config, which
        # allowing a change does not alter, and the first start needs it to pass the resume contract.
        allow = [f"--allow-change={','.join(self.allow_change)}"] if self.allow_change else []
        return [self.config, *self.overrides, f"run.dir={run_dir}", *allow]

    def __call__(self) -> dict[str, Any]:
        env = _job_environment()
        if env is not None:
            _export_dist_env(env)
        run_dir = self.resolve_run_dir(env)
        rank = env.global_rank if env is not None else 0
        is_main = rank == 0
        restart_count = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if is_main:
            # Where the code came from: the per-run snapshot when the profile asks for one.
            code = str(Path(restarts.__file__).resolve().parent.parent)
            restarts.record(run_dir, "start", kind=self.kind, world_size=env.num_tasks if env else 1, code=code)
            log.info("%s job %s in %s (restart %d of at most %d)", self.kind, env.job_id if env else "-",
                     run_dir, restart_count, self.max_requeues)
        preemption.reset()
        preemption.install_handlers()
        from personvit.distributed import init_distributed, shutdown

        init_distributed()
        try:
            try:
                result = load_entry(self.entry)(self.argv(run_dir))
            except preemption.Preempted as stop:
                self._on_preempted(run_dir, env, is_main, stop.step, stop.reason)
                raise AssertionError("unreachable: _on_preempted exits") from None
            if preemption.local_stop_requested():
                # A stop that came after the training loop (fine-tuning's evaluation): the loop itself
                # always raises `Preempted`. Requeue; the rerun finds the final checkpoint and re-evaluates.
                self._on_preempted(run_dir, env, is_main, None, preemption.stop_reason())
            if isinstance(result, int) and result != 0:
                raise RuntimeError(f"{self.entry} exited with status {result}; see the log in {run_dir}")
        except BaseException as e:
            if is_main and not isinstance(e, (SystemExit, RequeueRefused)):  # those recorded their own end
                restarts.record(run_dir, "end", status="failed", error=f"{type(e).__name__}: {e}"[:500])
            raise
        finally:
            shutdown()
        if is_main:
            restarts.record(run_dir, "end", status="completed")
        return {"run_dir": str(run_dir), "result": result if isinstance(result, (dict, int, float, str)) else None}

    # ------------------------------------------------------------------ preemption
    def _on_preempted(self, run_dir: Path, env: submitit.JobEnvironment | None, is_main: bool,
                      step: int | None, reason: str) -> None:
        """After the collective save: requeue (rank 0) and leave without writing a result."""
        from personvit.distributed import barrier

        barrier()  # every rank has left the training loop; rank 0 now requeues the whole job
        if not is_main:
            sys.exit(-1)  # no result file: the job is not over
        restart_count = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        kind = _stop_kind(env, reason)
        restarts.record(run_dir, "stop", reason=kind, signal=reason, step=step)
        if restart_count >= self.max_requeues:
            restarts.record(run_dir, "end", status="requeue refused",
                            error=f"{restart_count} restarts already (max_requeues={self.max_requeues})")
            raise RequeueRefused(f"not requeued: {restart_count} restarts already (max_requeues={self.max_requeues})")
        handler = preemption.chained_handler(signal.SIGUSR2)
        # submitit's handler when this rank got the signal itself; else (the flag came from another
        # rank, or from code) requeue directly.
        via_submitit = handler is not None and reason.startswith("SIG")
        restarts.record(run_dir, "requeue", reason=kind, via="submitit" if via_submitit else "scontrol")
        log.warning("stop at step %s (%s): saved; requeueing", step, kind)
        if via_submitit:
            # submitit: checkpoint() -> resubmission pickle -> scontrol requeue -> sys.exit(-1);
            # raises UncompletedJobError when its timeout budget is spent.
            handler(signal.SIGUSR2, None)
        job_id = os.environ.get("SLURM_JOB_ID")
        if job_id is None:
            raise RequeueRefused("stop requested outside Slurm: nothing to requeue (run again to resume)")
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        target = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else job_id
        subprocess.run(["scontrol", "requeue", target], check=True, timeout=60)
        sys.exit(-1)


def _stop_kind(env: submitit.JobEnvironment | None, reason: str) -> str:
    """`timed-out` when the job ran into its time limit, else `preempted` (submitit's own rule)."""
    if env is None or not reason.startswith("SIG"):
        return f"stop requested ({reason})"
    handler = preemption.chained_handler(signal.SIGUSR2)
    owner = getattr(handler, "__self__", None)
    if owner is not None and hasattr(owner, "has_timed_out"):
        return "timed-out" if owner.has_timed_out() else "preempted"
    return "preempted"


class CommandJob(submitit.helpers.Checkpointable):
    """Runs a console entry point in-process, e.g. one `shard-tools pack` array task.

    Args:
        entry: `module:function` taking argv and returning an exit status.
        argv: its arguments; `{array_index}` is replaced by the task's index when given.
    """

    def __init__(self, entry: str, argv: Sequence[str]):
        self.entry = entry
        self.argv = list(argv)

    def __call__(self) -> int:
        status = load_entry(self.entry)(self.argv)
        if status not in (None, 0):
            raise RuntimeError(f"{self.entry} {' '.join(self.argv)} exited with status {status}")
        return 0
