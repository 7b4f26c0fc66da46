"""Multi-crop wrapper: backbone + head over views of several resolutions, one pass per resolution.

DINO / iBOT feed the 2 global views and the n local views as lists; consecutive views with the
same (H, W) are concatenated into one batch so the backbone runs once per resolution group (twice
per step in the recipe, not 2 + n times). Patch logits are computed only for the leading
`patch_views` views (the global ones: the MIM loss needs them), CLS logits for every view, which
spares the head the local views' patch tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from personvit.models.drop_path import drop_path_uniforms

__all__ = ["MultiCropOutput", "MultiCropWrapper"]


class MultiCropOutput(NamedTuple):
    """What one multi-crop pass returns.

    cls: [V, B, K] CLS logits for every view, in input order.
    patch: [P, B, N, Kp] patch logits of the first P views, or None when P = 0.
    """

    cls: torch.Tensor
    patch: torch.Tensor | None


def resolution_groups(crops: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """[start, end) view ranges of consecutive crops sharing the same (H, W)."""
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(crops) + 1):
        if i == len(crops) or crops[i].shape[-2:] != crops[start].shape[-2:]:
            groups.append((start, i))
            start = i
    return groups


def _check_views(
    crops: Sequence[torch.Tensor] | torch.Tensor,
    masks: Sequence[torch.Tensor] | torch.Tensor | None,
    patch_views: int | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]], int]:
    """`MultiCropWrapper.forward`'s inputs as lists, checked; its resolution groups and `patch_views`.

    Raises:
        ValueError: no crops, unequal batch sizes, more masks than views, or `patch_views` past the
            first resolution group (patch logits of different grids cannot be stacked).
    """
    if isinstance(crops, torch.Tensor):
        crops = [crops]
    crops = list(crops)
    if len(crops) == 0:
        raise ValueError("MultiCropWrapper: no crops given")
    batch = crops[0].shape[0]
    if any(c.shape[0] != batch for c in crops):
        raise ValueError(f"MultiCropWrapper: all views need the same batch size, got {[c.shape[0] for c in crops]}")
    masks = list(masks) if masks is not None else []
    if len(masks) > len(crops):
        raise ValueError(f"MultiCropWrapper: {len(masks)} masks for {len(crops)} views")
    groups = resolution_groups(crops)
    if patch_views is None:
        patch_views = groups[0][1]
    if not 0 <= patch_views <= groups[0][1]:
        raise ValueError(
            f"MultiCropWrapper: patch_views={patch_views} must lie within the first {groups[0][1]} same-size views"
        )
    return crops, masks, groups, patch_views


class MultiCropWrapper(nn.Module):
    """Run a token backbone and a DINO head over a list of views.

    Args:
        backbone: module with `forward(x, mask=None) -> [B, 1 + N, D]` tokens (our ViT).
        head: module with `forward(tokens) -> (cls_logits, patch_logits)` (`DINOHead`).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self,
        crops: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor] | torch.Tensor | None = None,
        patch_views: int | None = None,
        drop_uniforms: torch.Tensor | None = None,
    ) -> MultiCropOutput:
        """Forward every view.

        Args:
            crops: V tensors [B, 3, H_v, W_v]; same-size views must be consecutive (globals first).
            masks: masks [B, N] (bool) for the first len(masks) views, e.g. the student's 2 globals;
                a [Vm, B, N] tensor is taken as Vm masks. None for the teacher.
            patch_views: how many leading views get patch logits; default the first resolution group.
            drop_uniforms: [V, B, slots] per-sample drop-path uniforms (models/drop_path.py); None
                draws drop path from torch's global generator.
        """
        crops, masks, groups, patch_views = _check_views(crops, masks, patch_views)
        batch = crops[0].shape[0]
        cls_out, patch_out = [], []
        for start, end in groups:
            x = torch.cat(list(crops[start:end]))
            mask = None
            if start < len(masks):
                # Views of this group without a mask get an all-False one (nothing replaced).
                n = masks[0].shape[-1] if masks[0].ndim == 2 else masks[0][0].numel()
                group_masks = [
                    masks[v].reshape(batch, -1)
                    if v < len(masks)
                    else torch.zeros(batch, n, dtype=torch.bool, device=x.device)
                    for v in range(start, end)
                ]
                mask = torch.cat(group_masks)
            # Rows of the group are view-major, like `x`.
            uniforms = drop_uniforms[start:end].flatten(0, 1) if drop_uniforms is not None else None
            with drop_path_uniforms(uniforms):
                tokens = self.backbone(x, mask=mask)
            if start < patch_views:
                cls, patch = self.head(tokens)
                keep = min(end, patch_views) - start
                patch_out.append(patch.unflatten(0, (end - start, batch))[:keep])
            else:
                cls, _ = self.head(tokens[:, 0])
            cls_out.append(cls)

        cls = torch.cat(cls_out).unflatten(0, (len(crops), batch))
        patch = torch.cat(patch_out) if patch_out else None
        return MultiCropOutput(cls=cls, patch=patch)
