"""PersonViT's self-distillation loss: DINO on CLS tokens + masked image modelling on patches.

SPEC.md section 3 (iBOT eqs. 4, 7, 8). `dino_mim_loss` is the pure function (no state, no
collectives); `DINOMIMLoss` wraps it with what is training state: the two centres (EMA 0.9 of the
teacher outputs, averaged across ranks) and the per-epoch teacher temperature warm-up.

Everything is computed in float32 whatever the input dtype: the softmax over 8192 prototypes at
temperature 0.04 is where bf16 loses the most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from personvit.config.pretrain import HeadConfig, PretrainLossConfig

__all__ = ["DINOMIMLoss", "LossOutput", "dino_mim_loss", "teacher_entropies", "warmup_temperature"]


class LossOutput(NamedTuple):
    """total = lambda1 * dino + lambda2 * mim; dino and mim are the unweighted terms."""

    total: torch.Tensor
    dino: torch.Tensor
    mim: torch.Tensor


def _cls_term(student_cls: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Mean cross-entropy over all (teacher view q, student view v) pairs with v != q."""
    log_s = F.log_softmax(student_cls.float() / student_temp, dim=-1)  # [Vs, B, K]
    vt, vs, batch = teacher_probs.shape[0], log_s.shape[0], log_s.shape[1]
    # ce[q, v] = mean over the batch of -sum_k t[q] log s[v]; one einsum instead of a double loop.
    ce = -torch.einsum("qbk,vbk->qv", teacher_probs, log_s) / batch
    same_view = torch.eye(vt, vs, dtype=torch.bool, device=ce.device)
    pairs = vt * vs - int(same_view.sum())
    if pairs == 0:
        raise ValueError(
            "dino_mim_loss: the DINO term needs at least one student view other than the teacher's"
        )
    return ce.masked_fill(same_view, 0.0).sum() / pairs


def _patch_term(
    student_patch: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """Per image: cross-entropy summed over masked patches / max(1, #masked); mean over batch and views."""
    log_s = F.log_softmax(student_patch.float() / student_temp, dim=-1)  # [2, B, N, Kp]
    ce = -(teacher_probs * log_s).sum(dim=-1)  # [2, B, N]
    m = masks.to(ce.dtype)
    per_image = (ce * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)
    return per_image.mean()


def dino_mim_loss(
    student_cls: torch.Tensor,
    student_patch: torch.Tensor,
    teacher_cls: torch.Tensor,
    teacher_patch: torch.Tensor,
    masks: torch.Tensor,
    center: torch.Tensor,
    center2: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
    teacher_patch_temp: float,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
) -> LossOutput:
    """DINO + MIM loss; pure (no state changes, no collectives). Teacher inputs get no gradient.

    Args:
        student_cls: [Vs, B, K] student CLS logits, the 2 global views first, then the locals.
        student_patch: [2, B, N, Kp] student patch logits of the (masked) global views.
        teacher_cls: [2, B, K] teacher CLS logits of the global views.
        teacher_patch: [2, B, N, Kp] teacher patch logits of the unmasked global views.
        masks: [2, B, N] bool, True where the student's patch was masked.
        center: [K] centre subtracted from teacher CLS logits.
        center2: [Kp] centre subtracted from teacher patch logits.
        student_temp: student temperature (0.1).
        teacher_temp: teacher CLS temperature for this epoch.
        teacher_patch_temp: teacher patch temperature for this epoch.
        lambda1: weight of the DINO term.
        lambda2: weight of the MIM term; 0 is the "w/o MIM" ablation (term computed without a graph).

    Returns:
        LossOutput(total, dino, mim), scalar float32 tensors; dino and mim unweighted.
    """
    vt = teacher_cls.shape[0]
    if student_cls.ndim != 3 or teacher_cls.ndim != 3 or student_cls.shape[1:] != teacher_cls.shape[1:]:
        raise ValueError(
            f"dino_mim_loss: student_cls {tuple(student_cls.shape)} and teacher_cls {tuple(teacher_cls.shape)} "
            "must be [V, B, K] with the same B and K"
        )
    if student_patch.shape != teacher_patch.shape or student_patch.shape[0] != vt:
        raise ValueError(
            f"dino_mim_loss: student_patch {tuple(student_patch.shape)} and teacher_patch "
            f"{tuple(teacher_patch.shape)} must both be [{vt}, B, N, Kp]"
        )
    if masks.shape != student_patch.shape[:3]:
        raise ValueError(
            f"dino_mim_loss: masks {tuple(masks.shape)} must be {tuple(student_patch.shape[:3])}"
        )
    if center.shape != teacher_cls.shape[-1:] or center2.shape != teacher_patch.shape[-1:]:
        raise ValueError(
            f"dino_mim_loss: center {tuple(center.shape)} / center2 {tuple(center2.shape)} must be "
            f"[{teacher_cls.shape[-1]}] / [{teacher_patch.shape[-1]}]"
        )

    # Autocast would run the einsum in bf16 again; the loss stays in float32 by construction.
    with torch.autocast(student_cls.device.type, enabled=False):
        t_cls = F.softmax((teacher_cls.detach().float() - center.float()) / teacher_temp, dim=-1)
        t_patch = F.softmax((teacher_patch.detach().float() - center2.float()) / teacher_patch_temp, dim=-1)
        dino = _cls_term(student_cls, t_cls, student_temp)
        if lambda2 == 0:
            # "w/o MIM": report the term, but build no graph through the patch logits.
            with torch.no_grad():
                mim = _patch_term(student_patch, t_patch, masks, student_temp)
            total = lambda1 * dino
        else:
            mim = _patch_term(student_patch, t_patch, masks, student_temp)
            total = lambda1 * dino + lambda2 * mim
    return LossOutput(total=total, dino=dino, mim=mim)


@torch.no_grad()
def teacher_entropies(teacher_cls: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """Collapse diagnostics of the teacher's CLS targets, in nats: [mean per-image entropy, entropy of
    the batch-mean target].

    The two ways DINO collapses show here before they show in retrieval: every image on one prototype
    drives both towards 0; uniform targets drive the first towards ln K (the centre wins over the
    sharpening). Healthy training keeps the first well below ln K and the second near ln K.

    Args:
        teacher_cls: [V, B, K] teacher CLS logits.
        center: [K] the centre the loss subtracts (before this step's update).
        teacher_temp: this epoch's teacher temperature.
    """
    with torch.autocast(teacher_cls.device.type, enabled=False):
        log_p = F.log_softmax((teacher_cls.float() - center.float()) / teacher_temp, dim=-1).flatten(0, 1)
        per_image = -(log_p.exp() * log_p).sum(-1).mean()
        mean_p = log_p.exp().mean(0)
        of_mean = -(mean_p * mean_p.clamp_min(1e-30).log()).sum()
    return torch.stack([per_image, of_mean])


def warmup_temperature(epoch: int, start: float, end: float, warmup_epochs: int) -> float:
    """Teacher temperature of an epoch: linear from `start` (epoch 0) to `end` (epoch warmup_epochs - 1),
    then constant, as iBOT's `np.linspace(start, end, warmup_epochs)` schedule.

    Args:
        epoch: 0-based epoch.
        start: temperature at epoch 0 (0.04).
        end: temperature after the warm-up (0.07).
        warmup_epochs: epochs of the warm-up (30); 0 means `end` from the start.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return float(end)
    if warmup_epochs == 1:
        return float(start)
    return float(start + (end - start) * epoch / (warmup_epochs - 1))


class DINOMIMLoss(nn.Module):
    """The loss with its training state: centres (buffers, checkpointed) and temperature schedules.

    Args:
        out_dim: K, CLS prototypes.
        patch_out_dim: Kp, patch prototypes.
        student_temp: student temperature (0.1).
        teacher_temp: teacher CLS temperature after warm-up (0.07).
        warmup_teacher_temp: teacher CLS temperature at epoch 0 (0.04).
        teacher_patch_temp: teacher patch temperature after warm-up (0.07).
        warmup_teacher_patch_temp: teacher patch temperature at epoch 0 (0.04).
        warmup_teacher_temp_epochs: warm-up length in epochs (30).
        center_momentum: EMA momentum of `center` (0.9).
        center_momentum2: EMA momentum of `center2` (0.9).
        lambda1: DINO weight (1).
        lambda2: MIM weight (1; 0 = "w/o MIM").
    """

    center: torch.Tensor
    center2: torch.Tensor

    def __init__(
        self,
        out_dim: int,
        patch_out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        teacher_patch_temp: float = 0.07,
        warmup_teacher_patch_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        center_momentum: float = 0.9,
        center_momentum2: float = 0.9,
        lambda1: float = 1.0,
        lambda2: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (("student_temp", student_temp), ("teacher_temp", teacher_temp),
                            ("warmup_teacher_temp", warmup_teacher_temp), ("teacher_patch_temp", teacher_patch_temp),
                            ("warmup_teacher_patch_temp", warmup_teacher_patch_temp)):  # fmt: skip
            if value <= 0:
                raise ValueError(f"DINOMIMLoss: {name} must be > 0, got {value}")
        for name, value in (("center_momentum", center_momentum), ("center_momentum2", center_momentum2)):
            if not 0 <= value <= 1:
                raise ValueError(f"DINOMIMLoss: {name} must be in [0, 1], got {value}")
        if lambda1 < 0 or lambda2 < 0:
            raise ValueError(f"DINOMIMLoss: lambda1/lambda2 must be >= 0, got {lambda1}/{lambda2}")
        self.student_temp = student_temp
        self.teacher_temp = (warmup_teacher_temp, teacher_temp)
        self.teacher_patch_temp = (warmup_teacher_patch_temp, teacher_patch_temp)
        self.warmup_epochs = warmup_teacher_temp_epochs
        self.center_momentum = center_momentum
        self.center_momentum2 = center_momentum2
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.register_buffer("center", torch.zeros(out_dim))
        self.register_buffer("center2", torch.zeros(patch_out_dim))

    @classmethod
    def from_config(cls, loss: PretrainLossConfig, head: HeadConfig) -> DINOMIMLoss:
        """The loss of a run: temperatures, momenta and weights from `loss`, prototype counts from `head`.

        Args:
            loss: the `loss` section (validated by its dataclass).
            head: the `model.head` section (`out_dim`, `patch_out_dim`).
        """
        return cls(
            head.out_dim, head.patch_out_dim, loss.student_temp, loss.teacher_temp, loss.warmup_teacher_temp,
            loss.teacher_patch_temp, loss.warmup_teacher_patch_temp, loss.warmup_teacher_temp_epochs,
            loss.center_momentum, loss.center_momentum2, loss.lambda1, loss.lambda2,
        )  # fmt: skip

    def temperatures(self, epoch: int) -> tuple[float, float]:
        """(teacher CLS temperature, teacher patch temperature) of an epoch."""
        return (
            warmup_temperature(epoch, *self.teacher_temp, self.warmup_epochs),
            warmup_temperature(epoch, *self.teacher_patch_temp, self.warmup_epochs),
        )

    def forward(
        self,
        student_cls: torch.Tensor,
        student_patch: torch.Tensor,
        teacher_cls: torch.Tensor,
        teacher_patch: torch.Tensor,
        masks: torch.Tensor,
        epoch: int,
        update_center: bool = True,
    ) -> LossOutput:
        """Loss of one step with this epoch's temperatures; then (by default) the centre update.

        Args:
            student_cls, student_patch, teacher_cls, teacher_patch, masks: see `dino_mim_loss`.
            epoch: 0-based epoch, picks the teacher temperatures.
            update_center: update the centres from these teacher outputs after the loss (a
                collective when a process group exists: every rank must call it).
        """
        temp, temp2 = self.temperatures(epoch)
        out = dino_mim_loss(
            student_cls, student_patch, teacher_cls, teacher_patch, masks,
            self.center, self.center2, self.student_temp, temp, temp2, self.lambda1, self.lambda2,
        )  # fmt: skip
        if update_center:
            self.update_center(teacher_cls, teacher_patch)
        return out

    @torch.no_grad()
    def update_center(self, teacher_cls: torch.Tensor, teacher_patch: torch.Tensor) -> None:
        """EMA of the teacher outputs' batch means, averaged over all ranks.

        Args:
            teacher_cls: [V, B, K] teacher CLS logits of this rank.
            teacher_patch: [V, B, N, Kp] teacher patch logits of this rank (mean over N per image).
        """
        self.update_center_from_stats(self.center_stats(teacher_cls, teacher_patch))

    @torch.no_grad()
    def center_stats(self, teacher_cls: torch.Tensor, teacher_patch: torch.Tensor) -> torch.Tensor:
        """This rank's sums for the centre update, flat `[cls sum (K), patch sum (Kp), count]`.

        Sums rather than means, so the stats of a step's micro-batches add up (gradient accumulation).
        """
        cls_sum = teacher_cls.detach().float().sum(dim=(0, 1))
        patch_sum = teacher_patch.detach().float().mean(dim=2).sum(dim=(0, 1))
        count = torch.tensor([float(teacher_cls.shape[0] * teacher_cls.shape[1])], device=cls_sum.device)
        return torch.cat([cls_sum, patch_sum, count])

    @torch.no_grad()
    def update_center_from_stats(self, stats: torch.Tensor) -> None:
        """EMA of the centres towards the means of `center_stats` summed over a step and all ranks.

        A collective when a process group exists: every rank must call it once per step.
        """
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # One collective for both centres and the count (ranks may differ in batch size).
            dist.all_reduce(stats)
        k = self.center.numel()
        cls_sum, patch_sum, count = stats[:k], stats[k:-1], stats[-1]
        m1, m2 = self.center_momentum, self.center_momentum2
        self.center.mul_(m1).add_(cls_sum / count, alpha=1 - m1)
        self.center2.mul_(m2).add_(patch_sum / count, alpha=1 - m2)
