"""`correspondence`: strongest mutual nearest-neighbour patch pairs between two images (paper Fig. 6).

Two images of the same person: patch i of A and patch j of B are mutual nearest neighbours when j is
i's most similar patch in B and i is j's most similar patch in A (cosine similarity of the last
layer's patch tokens). The strongest pairs are drawn as lines; good features link the same body parts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from personvit.models import VisionTransformer
from personvit.viz import draw
from personvit.viz.patch_clusters import patch_features

__all__ = ["mutual_nearest_neighbours", "render_correspondence"]


def mutual_nearest_neighbours(fa: torch.Tensor, fb: torch.Tensor, top: int | None = None) -> torch.Tensor:
    """Mutual nearest-neighbour pairs between two sets of L2-normalised patch features.

    Args:
        fa: [Na, D] patches of image A.
        fb: [Nb, D] patches of image B.
        top: keep the `top` most similar pairs (all when None).

    Returns:
        [M, 3] float tensor of (index in A, index in B, cosine similarity), most similar first
        (ties by index in A).
    """
    sim = fa.float() @ fb.float().t()
    a_to_b = sim.argmax(dim=1)  # ties -> lowest index, deterministic
    b_to_a = sim.argmax(dim=0)
    ia = torch.nonzero(b_to_a[a_to_b] == torch.arange(fa.shape[0]))[:, 0]
    ib = a_to_b[ia]
    score = sim[ia, ib]
    order = torch.sort(-score, stable=True).indices
    pairs = torch.stack([ia[order].float(), ib[order].float(), score[order]], dim=1)
    return pairs if top is None else pairs[:top]


def render_correspondence(img_a: Image.Image, img_b: Image.Image, pairs: np.ndarray, grid: tuple[int, int],
                          captions: tuple[list[str], list[str]], title: str, height: int = 320) -> Image.Image:
    """A and B side by side with a coloured line per pair between the patch centres.

    Args:
        img_a, img_b: RGB images the model saw (same size).
        pairs: [M, 3] rows of (patch in A, patch in B, similarity).
        grid: patch grid (h, w) of both images.
        captions: caption lines of A and B.
        title: figure caption.
        height: display height.
    """
    gh, gw = grid
    width = max(1, round(img_a.width * height / img_a.height))
    gap = max(60, width // 2)
    canvas = Image.new("RGB", (2 * width + gap, height), draw.BG)
    canvas.paste(img_a.resize((width, height), Image.Resampling.BICUBIC), (0, 0))
    canvas.paste(img_b.resize((width, height), Image.Resampling.BICUBIC), (width + gap, 0))
    d = ImageDraw.Draw(canvas)

    def centre(p: int, x0: int) -> tuple[float, float]:
        return x0 + (p % gw + 0.5) * width / gw, (p // gw + 0.5) * height / gh

    for rank, (pa, pb, _) in enumerate(pairs):
        colour = draw.PALETTE[rank % len(draw.PALETTE)]
        (xa, ya), (xb, yb) = centre(int(pa), 0), centre(int(pb), width + gap)
        d.line([xa, ya, xb, yb], fill=colour, width=2)
        for x, y in ((xa, ya), (xb, yb)):
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour, outline=(255, 255, 255))
    heads = draw.hstack([draw.titled(Image.new("RGB", (width + gap // 2, 1), draw.BG), captions[0], fit=True),
                         draw.titled(Image.new("RGB", (width + gap - gap // 2, 1), draw.BG), captions[1], fit=True)],
                         gap=0)
    sims = f"similarity {pairs[:, 2].min():.2f}-{pairs[:, 2].max():.2f}" if len(pairs) else "no mutual pair"
    note = f"line = mutual nearest-neighbour patch pair ({len(pairs)} strongest shown, {sims})"
    return draw.titled(draw.vstack([heads, canvas, draw.titled(Image.new("RGB", (1, 1), draw.BG), [note], size=12)],
                                   gap=0), [title], size=15)


def write_correspondence(model: VisionTransformer, x: torch.Tensor, images: list[Image.Image],
                         captions: tuple[list[str], list[str]], keys: tuple[str, str], top: int, step_tag: str,
                         out_dir: Path) -> Path:
    """Draw the `top` strongest mutual pairs of the two images in `x`; returns the PNG path."""
    feats = patch_features(model, x)
    pairs = mutual_nearest_neighbours(feats[0], feats[1], top).numpy()
    grid = model.grid_size(x.shape[-2:])
    fig = render_correspondence(images[0], images[1], pairs, grid, captions, f"patch correspondences ({step_tag})")
    path = draw.output_path(out_dir, "correspondence", step_tag, f"{keys[0]}--{keys[1]}")
    fig.save(path)
    return path
