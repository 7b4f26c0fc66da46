"""`PersonViTSSL`: the pretraining method as one object (after dinov2's `SSLMetaArch`).

It owns the student, the teacher (with their heads) and the loss with its centres, and exposes the
step's three moves explicitly, in the order a step makes them:

1. `forward_backward(micro_batches, epoch)`: per micro-batch, teacher targets, collapse
   diagnostics, student forward, loss, one all-reduce of the logged terms, the finiteness check and
   the backward pass (gradients accumulate); then the explicit centre update, once per step from the
   summed teacher statistics. It never touches the optimizer: the trainer zeroes gradients before
   it and steps after it.
2. (the trainer: gradient all-reduce, clipping, frozen last layer, optimizer step)
3. `update_teacher(momentum)`: the EMA of the student into the teacher.

`param_groups()` is the student's AdamW groups, from the model's own `no_weight_decay()`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from personvit.config.pretrain import PretrainConfig
from personvit.distributed import all_reduce_sum_
from personvit.engine.optim import param_groups
from personvit.engine.ssl_model import ema_update_, init_backbone
from personvit.losses import DINOMIMLoss, teacher_entropies
from personvit.models.build import build_student_teacher
from personvit.models.loading import LoadReport

__all__ = ["MicroBatch", "PersonViTSSL", "TERMS"]

# What `forward_backward` returns, rank-averaged, in this order.
TERMS = ("loss", "dino", "mim", "teacher_entropy", "teacher_mean_entropy")



class MicroBatch(NamedTuple):
    """One micro-batch of a step, on the device.

    views: the 2 global views first, then the local ones, normalised, each [m, 3, H, W].
    masks: [2, m, N] bool, the student's masked patches of the global views.
    drop_uniforms: [V, m, slots] per-sample drop-path uniforms, or None (global generator).
    """

    views: Sequence[torch.Tensor]
    masks: torch.Tensor
    drop_uniforms: torch.Tensor | None = None


class PersonViTSSL(nn.Module):
    """Student, teacher and DINO+MIM loss of a PersonViT pretraining run.

    Args:
        student: `MultiCropWrapper` trained by the optimizer.
        teacher: same architecture, no gradients; follows the student by EMA.
        loss_fn: the loss with its centres (checkpointed with the rest).
        world: ranks the logged terms are averaged over.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, loss_fn: DINOMIMLoss, world: int = 1) -> None:
        super().__init__()
        self.student, self.teacher, self.loss_fn = student, teacher, loss_fn
        self.world = world

    @classmethod
    def from_config(cls, cfg: PretrainConfig, world: int = 1) -> PersonViTSSL:
        """The method of a run: networks from `cfg.model` (seeded by `cfg.run.seed`), loss from `cfg.loss`."""
        student, teacher = build_student_teacher(cfg.model, cfg.data.global_size, cfg.run.seed)
        return cls(student, teacher, DINOMIMLoss.from_config(cfg.loss, cfg.model.head), world)

    def init_backbone(self, path: str) -> LoadReport:
        """Pretrained backbone weights (`model.init`) into the student, then copied to the teacher."""
        return init_backbone(self.student, self.teacher, path)

    def param_groups(self) -> list[dict]:
        """The student's AdamW groups: decayed, and not decayed (the model's `no_weight_decay()`)."""
        return param_groups(self.student)

    def forward_backward(
        self,
        micro_batches: Sequence[MicroBatch],
        epoch: int,
        *,
        scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
        autocast: contextlib.AbstractContextManager | None = None,
        on_non_finite: Callable[..., Any] | None = None,
    ) -> dict[str, float]:
        """Loss of one step over its equal-size micro-batches, backward, and the centre update.

        The loss is a mean over samples, so the mean of the micro-batches' losses is the step's
        loss and their accumulated gradients (each scaled by 1 / A) are the step's gradient. Every
        micro-batch is scored against the centre of the previous step, which is updated once after
        the last one from the summed teacher statistics, as if the step were one batch.

        Args:
            micro_batches: the step's micro-batches on this rank (one unless accumulating).
            epoch: picks the teacher temperatures.
            scale: applied to the loss before `backward` (the grad scaler's `scale`).
            autocast: the mixed-precision context of the forward passes (None: none).
            on_non_finite: called with `dino=, mim=, total=` when a term is NaN/inf on any rank; it
                is expected to raise (no backward happens after it returns either way).
        Returns:
            `TERMS`, averaged over ranks and micro-batches (the entropies are diagnostics of each
            micro-batch's targets, so they depend on the micro-batch size).
        """
        n = len(micro_batches)
        stats, totals = None, [0.0] * len(TERMS)
        for micro in micro_batches:
            out, entropies, micro_stats = self._forward(micro, epoch, autocast)
            stats = micro_stats if stats is None else stats + micro_stats
            # One collective for logging, the diagnostics and agreeing on every rank that the loss is finite.
            terms = (
                all_reduce_sum_(torch.cat([torch.stack([out.total, out.dino, out.mim]).detach().float(), entropies]))
                / self.world
            )
            values = [float(v) for v in terms.cpu()]
            total, dino, mim = values[:3]
            if not all(math.isfinite(v) for v in (total, dino, mim)):
                if on_non_finite is not None:
                    on_non_finite(dino=dino, mim=mim, total=total)
                return dict(zip(TERMS, values))
            # At n = 1 the loss is left as it is (no extra rounding): fixed-size runs stay bitwise.
            scale(out.total if n == 1 else out.total / n).backward()
            totals = [a + v for a, v in zip(totals, values)]
        self.loss_fn.update_center_from_stats(stats)
        return dict(zip(TERMS, totals if n == 1 else [v / n for v in totals]))

    def _forward(self, micro: MicroBatch, epoch: int, autocast) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(loss output, teacher entropies, centre statistics) of one micro-batch."""
        views, masks = micro.views, micro.masks
        with autocast if autocast is not None else contextlib.nullcontext():
            with torch.no_grad():
                t_out = self.teacher(views[:2], patch_views=2)
                # Diagnostics of the targets the loss will see: the centre before this step's update.
                entropies = teacher_entropies(t_out.cls, self.loss_fn.center, self.loss_fn.temperatures(epoch)[0])
            s_out = self.student(views, masks=masks, patch_views=2, drop_uniforms=micro.drop_uniforms)
            out = self.loss_fn(s_out.cls, s_out.patch, t_out.cls, t_out.patch, masks, epoch, update_center=False)
            stats = self.loss_fn.center_stats(t_out.cls, t_out.patch)
        return out, entropies, stats

    @torch.no_grad()
    def update_center(self, teacher_cls: torch.Tensor, teacher_patch: torch.Tensor) -> None:
        """The loss's centres follow this step's teacher outputs (a collective at world size > 1).

        Called after the loss of the step: the targets of a step use the centre of the previous one.
        """
        self.loss_fn.update_center(teacher_cls, teacher_patch)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, after the optimizer step."""
        ema_update_(self.teacher, self.student, momentum)
