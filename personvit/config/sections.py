"""Config sections shared by every command (run folder, checkpoints, distributed backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class RunConfig:
    """Where a run lives and how it reports.

    Attributes:
        dir: run folder; used as given when set. When unset, `runs/<kind>-<slurm job id>` (or a
            timestamp outside Slurm), so a requeued job finds its own folder again.
        seed: base seed; every random draw derives from (seed, stream, epoch, position).
        log_every_steps: metrics.jsonl / progress cadence.
        progress_every_s: period of the plain progress lines when stdout is not a terminal.
        tensorboard: also write TensorBoard event files (needs the `tensorboard` package).
    """

    dir: str | None = None
    seed: int = 0
    log_every_steps: int = 10
    progress_every_s: float = 30.0
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.log_every_steps < 1:
            raise ValueError("log_every_steps must be >= 1")
        if self.progress_every_s <= 0:
            raise ValueError("progress_every_s must be > 0")


@dataclass
class CheckpointConfig:
    """Checkpoint cadence and retention (see personvit.checkpoint.CheckpointManager).

    Attributes:
        every_steps: periodic checkpoint interval in optimiser steps (0 = only at epoch ends and on
            preemption).
        keep_last: how many recent complete checkpoints to keep; at least 2, because the newest may
            be the one being written when the job dies.
        keep_every_epochs: checkpoints at the end of every N-th epoch are kept forever (0 = none); the
            paper keeps every 20 epochs since the best fine-tuning start is epoch 200-240, not 300.
        resume: resume from the run folder's latest checkpoint when there is one.
    """

    every_steps: int = 0
    keep_last: int = 2
    keep_every_epochs: int = 0
    resume: bool = True

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            raise ValueError("every_steps must be >= 0")
        if self.keep_last < 2:
            raise ValueError("keep_last must be >= 2 (the newest checkpoint may be mid-write when a job dies)")
        if self.keep_every_epochs < 0:
            raise ValueError("keep_every_epochs must be >= 0")


@dataclass
class DistConfig:
    """Process-group settings.

    Attributes:
        backend: `auto` = NCCL when CUDA is available, gloo otherwise.
        timeout_s: collective timeout; a hung rank fails the job instead of burning the allocation.
    """

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    timeout_s: int = 1800
