"""Student / teacher care for DINO+MIM pretraining: initialise from pretrained weights, EMA-update.

The pair itself is built by `personvit.models.build.build_student_teacher` (the one model builder):
the teacher is the student's network without drop path, a copy of its weights, never given
gradients; after every optimiser step it moves towards the student with the scheduled EMA momentum.
"""

from __future__ import annotations

import torch
from torch import nn

from personvit.models import MultiCropWrapper
from personvit.models.loading import LoadReport, load_backbone

__all__ = ["ema_update_", "init_backbone"]


def init_backbone(student: MultiCropWrapper, teacher: MultiCropWrapper, path: str) -> LoadReport:
    """Load pretrained backbone weights (timm / ImageNet, iBOT, ours) into the student, copy to the teacher.

    Args:
        student, teacher: from `build_student_teacher`.
        path: the `model.init` file.
    Raises:
        CheckpointError: unreadable file, or nothing in it matches the backbone.
    """
    report = load_backbone(student.backbone, path, which="teacher")
    teacher.load_state_dict(student.state_dict())
    return report


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter (same names).

    Args:
        teacher: updated in place.
        student: the unwrapped student (not its DDP wrapper).
        momentum: this step's EMA momentum.
    """
    s_params = dict(student.named_parameters())
    t_list, s_list = [], []
    for name, t in teacher.named_parameters():
        s = s_params.get(name)
        if s is None:
            raise KeyError(f"ema_update_: teacher parameter {name!r} has no student counterpart")
        t_list.append(t)
        s_list.append(s.detach())
    torch._foreach_mul_(t_list, momentum)
    torch._foreach_add_(t_list, s_list, alpha=1.0 - momentum)
