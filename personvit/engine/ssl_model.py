"""Student / teacher wiring for DINO+MIM pretraining: build, initialise, EMA-update.

The student is a `MultiCropWrapper(ViT with drop path, DINOHead)`; the teacher is the same network
without drop path, initialised as a copy of the student and never given gradients: after every
optimiser step it moves towards the student with the scheduled EMA momentum. Both are built under a
seed derived from the run seed, so every rank starts from the same weights without a broadcast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from personvit.config.pretrain import PretrainModelConfig
from personvit.models import DINOHead, MultiCropWrapper, build_vit
from personvit.models.loading import LoadReport, load_backbone
from personvit.rng import Stream, derive_seed

__all__ = ["build_student_teacher", "ema_update_", "init_backbone"]


def _build(cfg: PretrainModelConfig, img_size: Sequence[int], drop_path_rate: float) -> MultiCropWrapper:
    backbone = build_vit(
        cfg.arch,
        img_size=tuple(img_size),
        attn_backend=cfg.attn_backend,
        drop_path_rate=drop_path_rate,
        **cfg.vit_overrides(),
    )
    h = cfg.head
    head = DINOHead(
        backbone.embed_dim,
        out_dim=h.out_dim,
        patch_out_dim=h.patch_out_dim,
        hidden_dim=h.hidden_dim,
        bottleneck_dim=h.bottleneck_dim,
        nlayers=h.nlayers,
        shared_head=h.shared_head,
        norm_last_layer=h.norm_last_layer,
    )
    return MultiCropWrapper(backbone, head)


def build_student_teacher(
    cfg: PretrainModelConfig, img_size: Sequence[int], seed: int
) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    """Student (drop path `cfg.drop_path_rate`) and teacher (no drop path) with equal weights.

    Args:
        cfg: the `model` section.
        img_size: (H, W) of the global views (lays out the position grid).
        seed: run seed; the initial weights derive from it alone.
    Returns:
        (student, teacher); the teacher's parameters do not require gradients.
    """
    state = torch.get_rng_state()
    try:
        # Weight init draws from torch's global generator: pin it so every rank builds the same net,
        # and restore it so building has no side effect on later draws.
        torch.manual_seed(derive_seed(seed, Stream.INIT))
        student = _build(cfg, img_size, cfg.drop_path_rate)
        teacher = _build(cfg, img_size, 0.0)
    finally:
        torch.set_rng_state(state)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


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
