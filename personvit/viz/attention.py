"""`attention`: the last block's CLS attention over the patches, per head and averaged (paper Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from personvit.models import VisionTransformer
from personvit.viz import draw

__all__ = ["cls_attention", "render_attention"]


@torch.no_grad()
def cls_attention(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """CLS-token attention of the last block over the patch tokens, on the patch grid.

    The CLS row of the softmax also weights the CLS token itself; that entry is dropped and the
    row renormalised, so each map is a distribution over the image's patches (sums to 1).

    Args:
        model: the backbone.
        x: normalised images [B, 3, H, W].

    Returns:
        [B, heads, h, w] maps, each summing to 1.
    """
    attn = model.last_attention(x)  # [B, heads, 1 + N, 1 + N]
    rows = attn[:, :, 0, 1:].float()
    rows = rows / rows.sum(dim=-1, keepdim=True)
    h, w = model.grid_size(x.shape[-2:])
    return rows.reshape(x.shape[0], attn.shape[1], h, w)


def render_attention(image: Image.Image, maps: np.ndarray, title: str, height: int = 256) -> Image.Image:
    """One figure row: the image, the head-averaged map, then every head, with a colour bar.

    Args:
        image: the RGB image the model saw (model input size).
        maps: [heads, h, w] attention maps of this image.
        title: caption above the row (key, step).
        height: display height of each panel.
    """
    width = max(1, round(image.width * height / image.height))
    shown = image.resize((width, height), Image.Resampling.BICUBIC)
    panels = [draw.titled(shown, ["image"]), draw.titled(draw.heat_overlay(shown, maps.mean(axis=0)), ["mean of heads"])]
    panels += [draw.titled(draw.heat_overlay(shown, m), [f"head {i}"]) for i, m in enumerate(maps)]
    row = draw.hstack(panels)
    note = "last-block CLS attention over patches; each panel scaled from its own min to its max"
    bar = draw.colorbar(min(row.width, 360), "low", "high attention")
    return draw.vstack([draw.titled(row, [title], size=15), draw.titled(bar, [note], size=12)])


def write_attention(model: VisionTransformer, x: torch.Tensor, images: list[Image.Image], keys: list[str],
                    step_tag: str, out_dir: Path) -> list[Path]:
    """Compute and save `attention_<step>_<key>.png` for each image; returns the paths."""
    maps = cls_attention(model, x).numpy()
    paths = []
    for image, m, key in zip(images, maps, keys):
        path = draw.output_path(out_dir, "attention", step_tag, key)
        render_attention(image, m, f"{key}  ({step_tag}, {m.shape[0]} heads)").save(path)
        paths.append(path)
    return paths
