"""A run folder is a contract: one writer, the config it was started with, and every later start.

`open_run_folder` is how `personvit pretrain` / `finetune` enter their folder. Rank 0 takes the
folder's lock (personvit/run_lock.py), compares this start's fingerprint (personvit/fingerprint.py)
with the one recorded by the previous start and refuses, before writing anything, when a key that
changes the computation differs and was not named with `--allow-change`. Only then does it record
the start; the other ranks wait for that verdict in one collective. History::

    config.yaml          the first start's resolved config (never rewritten)
    configs/NNNN.yaml    one file per start (0000 = the first): time, host, pid, Slurm job id,
                         command line, changed keys, fingerprint, resolved config

On the way out it turns faults into what the command line prints in one line: a failed write gets
the checkpoint a rerun resumes from, Ctrl-C becomes `Interrupted`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from personvit import fingerprint as fp
from personvit.atomic_write import atomic_write
from personvit.checkpoint import CheckpointManager
from personvit.config.core import ConfigError, config_to_dict
from personvit.run_lock import RunLock, RunLockedError
from personvit.runlog import get_logger, git_commit, resolve_run_dir
from personvit.write_errors import WriteFailedError, reporting_write_errors

__all__ = ["HISTORY_DIR", "Interrupted", "ResumeContractError", "RunFolder", "RunLockedError", "open_run_folder",
           "reporting_interrupts"]

HISTORY_DIR = "configs"

log = get_logger("run")


class ResumeContractError(ConfigError):
    """A rerun whose config differs from the run folder's in keys that change the computation."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT): what was running stopped; the message says what is safe on disk."""

    def __init__(self, step: int | None, checkpoint: str | None):
        self.step, self.checkpoint = step, checkpoint
        where = f"at step {step}" if step is not None else "before training started"
        super().__init__(f"interrupted {where}; last checkpoint {checkpoint or 'none'}; "
                         "rerun the same command to resume")


def fingerprint_of(cfg: Any, world_size: int, shards: str | Path) -> dict[str, Any]:
    """The flat fingerprint of one start: the resolved config plus `world_size` and the shard manifest digest."""
    out = fp.flatten(config_to_dict(cfg))
    out["world_size"] = int(world_size)
    manifest = Path(shards) / "manifest.json"
    try:
        out["data.manifest_sha256"] = fp.manifest_digest(manifest.read_bytes())
    except OSError:
        out["data.manifest_sha256"] = "<no manifest.json>"  # the loader reports the missing set itself
    return out


def _history(run_dir: Path) -> list[Path]:
    folder = run_dir / HISTORY_DIR
    return sorted(folder.glob("[0-9][0-9][0-9][0-9].yaml")) if folder.is_dir() else []


def recorded_fingerprint(run_dir: Path, current: dict[str, Any]) -> dict[str, Any] | None:
    """The fingerprint the previous start recorded; None for a new run folder.

    A folder written before starts were recorded has only `config.yaml`: its keys are compared,
    the pseudo-keys it cannot know are taken as unchanged.
    """
    starts = _history(run_dir)
    if starts:
        return dict(yaml.safe_load(starts[-1].read_text())["fingerprint"])
    legacy = run_dir / "config.yaml"
    if legacy.is_file():
        old = fp.flatten(yaml.safe_load(legacy.read_text()) or {})
        return {**{k: current[k] for k in ("world_size", "data.manifest_sha256")}, **old}
    return None


def check_contract(old: dict[str, Any] | None, new: dict[str, Any], allow_change: Sequence[str],
                   run_dir: Path) -> list[fp.Change]:
    """The changes of this start (all allowed), or ResumeContractError listing the refused ones, one per line."""
    try:
        allowed = fp.parse_allow_change(allow_change, new)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if old is None:
        return []
    changes = fp.diff(old, new)
    refused = fp.refused_changes(changes, allowed)
    if refused:
        keys = ",".join(c.key for c in refused)
        lines = "\n".join(f"  {fp.format_change(c)}" for c in refused)
        raise ResumeContractError(
            f"{run_dir} was started with another config; this rerun changes:\n{lines}\n"
            f"nothing was written. Rerun as before, use another run.dir, or allow it: --allow-change {keys}"
        )
    return changes


def record_start(run_dir: Path, cfg: Any, fingerprint: dict[str, Any], changes: Sequence[fp.Change],
                 kind: str, commit: str) -> Path:
    """Write `configs/NNNN.yaml` for this start (and `config.yaml` on the first); returns the new file."""
    starts = _history(run_dir)
    index = int(starts[-1].stem) + 1 if starts else 0
    entry = {
        "start": index, "kind": kind, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
        "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "git_commit": commit,
        "command": list(sys.argv), "changed": [fp.format_change(c) for c in changes],
        "fingerprint": fingerprint, "config": config_to_dict(cfg),
    }  # fmt: skip
    path = run_dir / HISTORY_DIR / f"{index:04d}.yaml"
    _atomic_yaml(path, entry)
    if not (run_dir / "config.yaml").exists():
        _atomic_yaml(run_dir / "config.yaml", config_to_dict(cfg))
    return path


def _atomic_yaml(path: Path, data: Any) -> None:
    atomic_write(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


class RunFolder:
    """An opened run folder (see `open_run_folder`): its path, and rank 0's lock while it is open."""

    def __init__(self, path: Path, lock: RunLock | None):
        self.path, self.lock = path, lock

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def last_checkpoint(self) -> str | None:
        """What a rerun would resume from now."""
        found = CheckpointManager(self.checkpoints, is_main=False).latest()
        return str(found) if found else None

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


@contextlib.contextmanager
def open_run_folder(cfg: Any, kind: str, rank: int, world_size: int, device: Any = None,
                    allow_change: Sequence[str] = ()) -> Iterator[RunFolder]:
    """Lock the run folder, enforce the resume contract, record the start; yields the `RunFolder`.

    Args:
        cfg: the resolved config (`cfg.run.dir`, `cfg.data.shards`).
        kind: `pretrain` or `finetune` (default folder name).
        rank, world_size: this process's place; rank 0 does all the file work.
        device: where the verdict collective's tensor lives (the NCCL device; CPU for gloo).
        allow_change: `--allow-change` values.
    Raises:
        RunLockedError, ResumeContractError, ConfigError: refused, nothing written (rank 0's reason;
            the other ranks get a pointer to it).
        WriteFailedError, Interrupted: from the block, with the last complete checkpoint filled in.
    """
    run_dir = resolve_run_dir(cfg.run.dir, kind)
    error: Exception | None = None
    lock = None
    if rank == 0:
        try:
            lock = RunLock(run_dir)
            with reporting_write_errors(lock.path):
                lock.acquire()
            try:
                new = fingerprint_of(cfg, world_size, cfg.data.shards)
                changes = check_contract(recorded_fingerprint(run_dir, new), new, allow_change, run_dir)
            except Exception:
                lock.restore()
                raise
            commit = git_commit()
            record_start(run_dir, cfg, new, changes, kind, commit)
            _log_start(run_dir, kind, cfg, changes, commit)
        except (RunLockedError, ConfigError, WriteFailedError) as e:
            if lock is not None:
                lock.release()
            error = e
    if _any_rank(error is not None, world_size, device) and error is None:
        error = RunLockedError(f"rank 0 refused {run_dir} (its error is above); this rank stops too")
    if error is not None:
        raise error
    folder = RunFolder(run_dir, lock)
    try:
        yield folder
    except WriteFailedError as e:
        if not e.checkpoint_known:
            e.last_checkpoint, e.checkpoint_known = folder.last_checkpoint(), True
        raise
    except KeyboardInterrupt:
        raise Interrupted(None, folder.last_checkpoint()) from None
    finally:
        folder.close()


@contextlib.contextmanager
def reporting_interrupts(step: Callable[[], int], last_checkpoint: Callable[[], Any]) -> Iterator[None]:
    """Turn Ctrl-C inside a training loop into `Interrupted` naming the step reached and the last checkpoint."""
    try:
        yield
    except KeyboardInterrupt:
        found = last_checkpoint()
        raise Interrupted(step(), str(found) if found else None) from None


def _any_rank(flag: bool, world_size: int, device: Any) -> bool:
    if world_size == 1:
        return flag
    import torch

    from personvit.distributed import all_reduce_max_

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    return bool(all_reduce_max_(t).item())


def _log_start(run_dir: Path, kind: str, cfg: Any, changes: Sequence[fp.Change], commit: str) -> None:
    log.info("%s run folder: %s", kind, run_dir.resolve())
    log.info("git commit: %s", commit)
    for change in changes:
        log.info("changed since the previous start: %s", fp.format_change(change))
    log.info("resolved config:\n%s", yaml.safe_dump(config_to_dict(cfg), sort_keys=False).rstrip())
