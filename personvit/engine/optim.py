"""AdamW with iBOT's parameter groups, per-step schedule values, per-tensor clipping, frozen last layer.

Which parameters weight decay skips is the model's answer, timm's convention: a module with a
`no_weight_decay()` method names its own (the ViT does); parameters of modules without one follow
iBOT's `get_params_groups` rule, biases and 1-D tensors. `no_weight_decay_names` is that one rule for
both trainers: pretraining puts those parameters in a group whose decay stays 0 whatever the schedule
says; fine-tuning (BoT) gives the biases among them their own decay and lr factor.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = [
    "apply_schedule",
    "build_adamw",
    "cancel_last_layer_grads",
    "clip_grad_per_tensor_",
    "no_weight_decay_names",
    "param_groups",
]

DECAY, NO_DECAY = "decay", "no_decay"


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of `model`'s parameters that get no (or, in fine-tuning, their own) weight decay.

    Args:
        model: any module; submodules with a `no_weight_decay()` method (timm's hook) answer for their
            own parameters, the rest follow the default rule (biases and 1-D tensors).
    """
    names: set[str] = set()
    owned: set[str] = set()
    for prefix, module in model.named_modules():
        hook = getattr(module, "no_weight_decay", None)
        if not callable(hook):
            continue
        dot = f"{prefix}." if prefix else ""
        owned.update(dot + n for n, _ in module.named_parameters())
        names.update(dot + n for n in hook())
    for name, p in model.named_parameters():
        if name not in owned and (name.endswith(".bias") or p.ndim == 1):
            names.add(name)
    return names


def param_groups(model: nn.Module) -> list[dict]:
    """Trainable parameters split into a decayed group and a non-decayed one (`no_weight_decay_names`).

    Args:
        model: the student (wrapper of backbone + head).
    Returns:
        `[{"name": "decay", "params": [...]}, {"name": "no_decay", "params": [...], "weight_decay": 0.0}]`,
        each in `named_parameters()` order (the optimizer state's indices depend on it).
    """
    skip = no_weight_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name in skip else decay).append(p)
    return [
        {"name": DECAY, "params": decay},
        {"name": NO_DECAY, "params": no_decay, "weight_decay": 0.0},
    ]


def build_adamw(model: nn.Module, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over `param_groups(model)`; lr and weight decay are set every step by `apply_schedule`.

    Args:
        model: the student.
        betas: AdamW betas.
    """
    return torch.optim.AdamW(param_groups(model), lr=0.0, betas=betas, weight_decay=0.0)


def apply_schedule(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set this step's learning rate on every group and weight decay on the decayed group only."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if group.get("name") == DECAY:
            group["weight_decay"] = weight_decay


@torch.no_grad()
def clip_grad_per_tensor_(params: Iterable[nn.Parameter], max_norm: float) -> None:
    """Scale each gradient tensor whose L2 norm exceeds `max_norm` down to it (iBOT `clip_gradients`).

    Unlike `torch.nn.utils.clip_grad_norm_` the norm is per tensor, not global.

    Args:
        params: parameters whose `.grad` may be set.
        max_norm: per-tensor threshold (> 0).
    """
    for p in params:
        if p.grad is None:
            continue
        coef = max_norm / (p.grad.norm(2) + 1e-6)
        if coef < 1:
            p.grad.mul_(coef)


def cancel_last_layer_grads(model: nn.Module, epoch: int, freeze_epochs: int) -> None:
    """Drop the heads' last-layer gradients during the first `freeze_epochs` epochs.

    A `None` gradient makes AdamW skip the tensor entirely (no decay, no moment update), as in iBOT;
    the prototypes stay at their init while the rest of the network settles.

    Args:
        model: the student (parameter names containing `last_layer`).
        epoch: the current epoch.
        freeze_epochs: `optim.freeze_last_layer`.
    """
    if epoch >= freeze_epochs:
        return
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None
