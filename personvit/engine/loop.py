"""One training-loop skeleton for both trainers (after torchtitan's train / train_step split and
fast-reid's hooks).

The loop owns what both trainers used to write inline: the position arithmetic (step, epoch, next
batch), the checkpoint policy, the metrics / progress calls and the preemption protocol. A trainer
supplies a step function and its stateful parts, registered with a `Checkpointer`.

Checkpoint policy, after each step: save every `every_steps` steps and at the end of every epoch; when
a stop was requested (Slurm's warning signal), save unless this step was just saved, wait for every
rank, and raise `Preempted`. The CLI (personvit/cli.py) turns that into exit status 75.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from personvit import preemption
from personvit.checkpoint import CheckpointError, CheckpointManager
from personvit.distributed import barrier
from personvit.run_folder import reporting_interrupts
from personvit.runlog import MetricsLogger, ProgressReporter, get_logger

__all__ = ["Checkpointer", "Position", "SaveReport", "StepOutput", "TrainLoop"]

log = get_logger(__name__)


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


@dataclass
class Position:
    """Where training stands: optimiser steps done, epoch, and the batch to run next in it."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass(frozen=True)
class SaveReport:
    """What a `Checkpointer.save` did (path None off the main rank)."""

    path: Any
    step: int
    epoch: int
    end_of_epoch: bool
    parts: tuple[str, ...]


class Checkpointer:
    """A registry of stateful parts over a `CheckpointManager`.

    A part registered under a name is stored as `payload[name] = part.state_dict()`; one registered
    with `name=None` has its `state_dict()` (a dict) merged at the top of the payload (fine-tuning's
    flat `next_epoch` / `num_classes` layout, which evaluation and export read). Parts load in
    registration order, so a part that only checks compatibility goes first and refuses before any
    weight is touched; its `ValueError` becomes a `CheckpointError` naming the file.

    Args:
        manager: the run's checkpoint folder.
    """

    def __init__(self, manager: CheckpointManager) -> None:
        self.manager = manager
        self._parts: list[tuple[str | None, Stateful]] = []

    def register(self, name: str | None, part: Stateful) -> None:
        self._parts.append((name, part))

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, part in self._parts:
            if name is None:
                out.update(part.state_dict())
            else:
                out[name] = part.state_dict()
        return out

    def save(self, pos: Position, end_of_epoch: bool) -> SaveReport:
        """Save every part at `pos` (the next position); `pos.epoch` is completed epochs at an end."""
        path = self.manager.save(self.state(), pos.step, pos.epoch, end_of_epoch=end_of_epoch)
        names = tuple(n or "(top level)" for n, _ in self._parts)
        return SaveReport(path, pos.step, pos.epoch, end_of_epoch, names)

    def load_latest(self) -> tuple[str, int] | None:
        """Load the newest loadable checkpoint into every part; (its path, its step), or None."""
        state = self.manager.load_latest()
        if state is None:
            return None
        where = state["_path"]
        for name, part in self._parts:
            try:
                part.load_state_dict(state if name is None else state[name])
            except ValueError as e:
                raise CheckpointError(f"{where}: {e}") from None
        return where, int(state["step"])


@dataclass
class StepOutput:
    """What a step function hands back: metrics to log, fields for the progress line, log it anyway."""

    metrics: dict[str, Any]
    progress: dict[str, Any] = field(default_factory=dict)
    log_now: bool = False


@dataclass
class TrainLoop:
    """The loop over (epoch, batch) positions from a start position to `epochs`.

    Args:
        name: `pretrain` / `finetune` (progress line, log messages).
        epochs: epochs to train.
        batches_per_epoch: number of batches of an epoch.
        batches: `(epoch, start_batch) -> iterable` of the epoch's batches from `start_batch` on.
        step_fn: `(position of this batch, batch) -> StepOutput`; the position's step is the number
            of steps done before this one.
        checkpointer: the trainer's registered parts.
        metrics: the run's metrics log.
        every_steps: periodic checkpoint interval (0 = only epoch ends and preemption).
        log_every_steps: metrics interval.
        progress_every_s, is_main: progress line settings.
        on_epoch_start: called with the epoch before its first batch (lr of the epoch, ...).
    """

    name: str
    epochs: int
    batches_per_epoch: Callable[[int], int]
    batches: Callable[[int, int], Iterable[Any]]
    step_fn: Callable[[Position, Any], StepOutput]
    checkpointer: Checkpointer
    metrics: MetricsLogger
    every_steps: int = 0
    log_every_steps: int = 1
    progress_every_s: float = 30.0
    is_main: bool = True
    on_epoch_start: Callable[[int], None] | None = None

    def run(self, pos: Position) -> Position:
        """Train from `pos` (updated in place, and returned) to the end of `epochs`.

        Raises:
            Preempted: a stop was requested; a checkpoint of the last step is saved on every rank's
                behalf and every rank has reached it.
        """
        total = sum(self.batches_per_epoch(e) for e in range(self.epochs))
        done = sum(self.batches_per_epoch(e) for e in range(pos.epoch)) + pos.batch
        self.metrics.truncate_after(pos.step)
        ckpt = self.checkpointer.manager
        with reporting_interrupts(lambda: pos.step, ckpt.latest), ProgressReporter(
            total, self.name, enabled=self.is_main, every_s=self.progress_every_s, initial=done
        ) as progress:
            while pos.epoch < self.epochs:
                if self.on_epoch_start is not None:
                    self.on_epoch_start(pos.epoch)
                niter = self.batches_per_epoch(pos.epoch)
                for item in self.batches(pos.epoch, pos.batch):
                    epoch = pos.epoch
                    out = self.step_fn(pos, item)
                    pos.step += 1
                    end_of_epoch = pos.batch == niter - 1
                    pos.epoch, pos.batch = (epoch + 1, 0) if end_of_epoch else (epoch, pos.batch + 1)
                    if pos.step % self.log_every_steps == 0 or out.log_now:
                        self.metrics.log(pos.step, epoch=epoch, **out.metrics)
                    progress.advance(1, epoch=epoch, **out.progress)
                    self._apply_policy(pos, end_of_epoch)
                    if end_of_epoch:
                        break
                else:
                    if pos.batch < niter:  # the batches ran out before the epoch's count
                        raise RuntimeError(f"{self.name}: epoch {pos.epoch} ended at batch {pos.batch} of {niter}")
                    pos.epoch, pos.batch = pos.epoch + 1, 0  # started at the epoch's end: nothing left in it
        barrier()
        self.metrics.close()
        return pos

    def _apply_policy(self, pos: Position, end_of_epoch: bool) -> None:
        periodic = bool(self.every_steps) and pos.step % self.every_steps == 0
        saved = end_of_epoch or periodic
        if saved:
            self._save(pos, end_of_epoch)
        if preemption.stop_requested():
            if not saved:
                self._save(pos, end_of_epoch)
            barrier()
            log.warning("stop requested (%s): checkpoint of step %d saved", preemption.stop_reason(), pos.step)
            raise preemption.Preempted(pos.step, preemption.stop_reason())

    def _save(self, pos: Position, end_of_epoch: bool) -> None:
        report = self.checkpointer.save(pos, end_of_epoch)
        if report.path is not None:
            log.debug("saved %s (step %d, epoch %d, end of epoch %s)", report.path, report.step, report.epoch,
                      report.end_of_epoch)
