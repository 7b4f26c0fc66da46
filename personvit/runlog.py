"""Run folders, metrics.jsonl, and progress that reads well both on a terminal and in a Slurm log.

rich's live progress bar prints nothing but the final frame when stdout is redirected (a Slurm log),
so off a terminal we print a plain line every `every_s` seconds instead.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from personvit.atomic_write import atomic_write
from personvit.write_errors import reporting_write_errors

_CONFIGURED = False


def get_logger(name: str = "personvit") -> logging.Logger:
    """A logger under the `personvit` hierarchy; configures the root handler once.

    On a terminal the handler is rich's; otherwise plain timestamped lines (Slurm logs). Ranks other
    than 0 log warnings and errors only, so an 8x8 job does not print everything 64 times.
    """
    global _CONFIGURED
    if not _CONFIGURED:
        _CONFIGURED = True
        root = logging.getLogger("personvit")
        rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
        root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        if sys.stderr.isatty():
            from rich.logging import RichHandler

            handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
            handler.setFormatter(logging.Formatter("%(message)s"))
        else:
            handler = logging.StreamHandler(sys.stderr)
            prefix = f"[rank{rank}] " if rank else ""
            handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
                                                   "%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
    if not name.startswith("personvit"):
        name = f"personvit.{name}"
    return logging.getLogger(name)


def resolve_run_dir(run_dir: str | None, kind: str) -> Path:
    """The run folder: `run_dir` as given, else `runs/<kind>-<slurm job id>` (array: `<A>_<a>`).

    Outside Slurm the default is a timestamp, which cannot be found again after a crash; tests and
    users who want resume there set `run.dir`.
    """
    if run_dir:
        return Path(run_dir).expanduser()
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return Path("runs") / f"{kind}-{array_job}_{array_task}"
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return Path("runs") / f"{kind}-{job}"
    return Path("runs") / f"{kind}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def git_commit(cwd: str | Path | None = None) -> str:
    """The source tree's commit (with `+dirty` when modified), or `unknown` outside git."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run(cfg: Any, run_dir: str | Path, kind: str, is_main: bool = True) -> Path:
    """Create the run folder, save the resolved `config.yaml`, log the commit and the config.

    Args:
        cfg: the resolved config dataclass.
        run_dir: the folder (see `resolve_run_dir`).
        kind: `pretrain`, `finetune`, ...
        is_main: only rank 0 writes.
    """
    import yaml

    from personvit.config.core import config_to_dict, save_config

    run_dir = Path(run_dir)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        log = get_logger("run")
        log.info("%s run folder: %s", kind, run_dir.resolve())
        log.info("git commit: %s", git_commit())
        log.info("resolved config:\n%s", yaml.safe_dump(config_to_dict(cfg), sort_keys=False).rstrip())
    return run_dir


class MetricsLogger:
    """Appends one JSON object per logged step to `metrics.jsonl` (main rank only).

    Args:
        path: the jsonl file.
        enabled: False on non-main ranks (then every call is a no-op).
        tensorboard_dir: also write TensorBoard scalars there when set and tensorboard is installed.
    """

    def __init__(self, path: str | Path, enabled: bool = True, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                get_logger("run").warning("run.tensorboard=true but tensorboard is not installed; skipping")

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step`: a resumed run re-logs them, and duplicates confuse plots."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", -1) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a line cut by a kill
        atomic_write(self.path, "".join(k + "\n" for k in kept))

    def log(self, step: int, **metrics: Any) -> None:
        """Append `{"step": step, **metrics}`; floats that are not finite are written as strings."""
        if not self.enabled:
            return
        row: dict[str, Any] = {"step": int(step)}
        for k, v in metrics.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            row[k] = v
        line = (json.dumps(row) + "\n").encode()
        with reporting_write_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One O_APPEND write: a full disk leaves at most a cut last line, which readers skip.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                if os.write(fd, line) != len(line):  # a short write is how a full disk starts
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            finally:
                os.close(fd)
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class ProgressReporter:
    """Progress: a rich bar on a terminal, a plain line every `every_s` seconds otherwise.

    Args:
        total: units of work (steps, images, ...).
        desc: what is progressing.
        enabled: False on non-main ranks.
        every_s: period of plain lines off a terminal.
        initial: units already done (a resumed run).
        stream: where plain lines go (stdout by default: that is the Slurm log).
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, every_s: float = 30.0, initial: int = 0,
                 stream=None):
        self.total, self.desc, self.enabled, self.every_s = int(total), desc, enabled, every_s
        self.done = int(initial)
        self.stream = stream or sys.stdout
        self.fields: dict[str, Any] = {}
        self._tty = enabled and self.stream.isatty()
        self._progress = None
        self._task = None
        self._t0 = self._last = time.monotonic()
        self._done0 = self.done

    def __enter__(self) -> ProgressReporter:
        if self._tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self._progress.start()
            self._task = self._progress.add_task(self.desc, total=self.total, completed=self.done, info="")
        return self

    def _info(self) -> str:
        parts = []
        for k, v in self.fields.items():
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        return " ".join(parts)

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Record `n` more units done and update the displayed fields (loss, lr, ...)."""
        if not self.enabled:
            return
        self.done += n
        self.fields.update(fields)
        if self._progress is not None:
            self._progress.update(self._task, advance=n, info=self._info())
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            rate = (self.done - self._done0) / max(now - self._t0, 1e-9)
            pct = 100.0 * self.done / max(self.total, 1)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_s = "?" if not math.isfinite(eta) else str(_dt.timedelta(seconds=int(eta)))
            print(f"{self.desc}: {self.done}/{self.total} ({pct:.1f}%) {rate:.2f}/s eta {eta_s} {self._info()}".rstrip(),
                  file=self.stream, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
