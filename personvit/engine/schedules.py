"""Per-iteration schedules as pure functions (iBOT / DINO `cosine_scheduler` semantics).

A schedule is a float64 array with one value per iteration, computed once from the config and the
number of iterations per epoch. Indexing it by the global step (rather than stepping a stateful
scheduler) is what lets a resumed run pick up the exact value without checkpointing scheduler state.
Fine-tuning reuses `cosine_schedule` per epoch with `niter_per_ep=1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from personvit.config.pretrain import PretrainOptimConfig

__all__ = ["PretrainSchedules", "cosine_schedule", "pretrain_schedules"]


def cosine_schedule(
    base: float,
    final: float,
    epochs: int,
    niter_per_ep: int,
    warmup_epochs: int = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Linear warm-up then half-cosine from `base` to `final`, one value per iteration.

    Same values as iBOT's `utils.cosine_scheduler`: the warm-up is `linspace(start_warmup_value,
    base, warmup_iters)` (it reaches `base` on its last iteration), then the cosine runs over the
    remaining iterations, starting exactly at `base` and approaching `final`.

    Args:
        base: value at the end of the warm-up / start of the cosine.
        final: value the cosine decays (or rises) towards.
        epochs: schedule length in epochs.
        niter_per_ep: iterations per epoch (1 for per-epoch schedules).
        warmup_epochs: epochs of linear warm-up (0 = none).
        start_warmup_value: first value of the warm-up.

    Returns:
        float64 array of length `epochs * niter_per_ep`.
    """
    if epochs < 1 or niter_per_ep < 1:
        raise ValueError(
            f"cosine_schedule: epochs and niter_per_ep must be >= 1, got {epochs}, {niter_per_ep}"
        )
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"cosine_schedule: warmup_epochs must be in [0, {epochs}], got {warmup_epochs}")
    warmup_iters = warmup_epochs * niter_per_ep
    total = epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base, warmup_iters) if warmup_iters > 0 else np.zeros(0)
    iters = np.arange(total - warmup_iters, dtype=np.float64)
    cosine = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * iters / max(len(iters), 1)))
    return np.concatenate((warmup, cosine)).astype(np.float64)


@dataclass(frozen=True)
class PretrainSchedules:
    """Per-iteration values of the pretraining run (index = global step)."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray

    def at(self, step: int) -> tuple[float, float, float]:
        """(lr, weight decay, teacher momentum) of global step `step`."""
        if not 0 <= step < len(self.lr):
            raise IndexError(f"step {step} outside the schedule's {len(self.lr)} iterations")
        return float(self.lr[step]), float(self.weight_decay[step]), float(self.momentum[step])

    @classmethod
    def from_config(
        cls, optim: PretrainOptimConfig, epochs: int, niter_per_ep: int, total_batch: int
    ) -> PretrainSchedules:
        """The run's schedules from its `optim` section (validated by its dataclass).

        Args:
            optim: the `optim` section; its lr is scaled to `total_batch`.
            epochs: `train.epochs`.
            niter_per_ep: optimiser steps per epoch.
            total_batch: images per optimiser step over all ranks.
        """
        return pretrain_schedules(
            optim.scaled_lr(total_batch), optim.min_lr, optim.warmup_epochs, optim.weight_decay,
            optim.weight_decay_end, optim.momentum_teacher, optim.momentum_teacher_end, epochs, niter_per_ep,
        )  # fmt: skip


def pretrain_schedules(
    peak_lr: float,
    min_lr: float,
    warmup_epochs: int,
    weight_decay: float,
    weight_decay_end: float,
    momentum_teacher: float,
    momentum_teacher_end: float,
    epochs: int,
    niter_per_ep: int,
) -> PretrainSchedules:
    """The three iBOT schedules: lr (warm-up + cosine), weight decay (cosine up), EMA momentum (cosine to 1).

    Args:
        peak_lr: learning rate after the warm-up (already scaled by the batch size).
        min_lr: final learning rate.
        warmup_epochs: lr warm-up epochs.
        weight_decay, weight_decay_end: weight-decay schedule ends.
        momentum_teacher, momentum_teacher_end: teacher EMA momentum ends.
        epochs: training length.
        niter_per_ep: optimiser steps per epoch.
    """
    return PretrainSchedules(
        lr=cosine_schedule(peak_lr, min_lr, epochs, niter_per_ep, warmup_epochs),
        weight_decay=cosine_schedule(weight_decay, weight_decay_end, epochs, niter_per_ep),
        momentum=cosine_schedule(momentum_teacher, momentum_teacher_end, epochs, niter_per_ep),
    )
