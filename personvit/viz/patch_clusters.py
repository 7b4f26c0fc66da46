"""`patch-clusters`: k-means over patch-token features of many images, shown as red dots (paper Fig. 4).

If the model learned part-level semantics, a cluster gathers the same body part (head, shoes, bag)
across people; the figure shows, for each cluster, where its patches fall on sample images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from personvit.models import VisionTransformer
from personvit.rng import Stream, torch_generator
from personvit.viz import draw

__all__ = ["kmeans", "patch_features", "render_clusters"]


@torch.no_grad()
def patch_features(model: VisionTransformer, x: torch.Tensor, head_mlp: torch.nn.Module | None = None) -> torch.Tensor:
    """L2-normalised patch features, [B, N, D] (CLS dropped).

    Args:
        model: the backbone; its last-layer normed patch tokens are the features by default.
        x: normalised images [B, 3, H, W].
        head_mlp: the projection head's MLP; when given, features are its (bottleneck) output,
            the space the DINO/iBOT prototypes live in.
    """
    tokens = model.forward_features(x)[:, 1:].float()
    if head_mlp is not None:
        tokens = head_mlp(tokens)
    return torch.nn.functional.normalize(tokens, dim=-1)


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding; deterministic for a seed.

    Args:
        x: [n, D] points.
        k: clusters (<= n).
        iters: maximum Lloyd iterations (stops early when assignments stop changing).
        seed: seed of the k-means++ draws.

    Returns:
        (centroids [k, D], assignment [n] int64). Ties go to the lower cluster index.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for {n} points, got {k}")
    x = x.double()
    gen = torch_generator(seed, Stream.INIT)  # clustering initialisation draws
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype)
    centroids[0] = x[torch.randint(n, (1,), generator=gen)]
    closest = torch.cdist(x, centroids[:1]).squeeze(1).pow(2)
    for c in range(1, k):
        probs = closest / closest.sum() if closest.sum() > 0 else torch.full_like(closest, 1.0 / n)
        centroids[c] = x[torch.multinomial(probs, 1, generator=gen)]
        closest = torch.minimum(closest, (x - centroids[c]).pow(2).sum(dim=1))
    assign = torch.full((n,), -1, dtype=torch.int64)
    for _ in range(iters):
        new = torch.cdist(x, centroids).argmin(dim=1)
        if torch.equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = x[assign == c]
            # An emptied cluster keeps its centroid rather than inventing a new one.
            if members.shape[0]:
                centroids[c] = members.mean(dim=0)
    return centroids.float(), assign


def render_clusters(images: list[Image.Image], assign: np.ndarray, k: int, grid: tuple[int, int], keys: list[str],
                    title: str, height: int = 192) -> Image.Image:
    """Rows = clusters, columns = images; red dots mark the patches of that cluster in that image.

    Args:
        images: RGB images the model saw.
        assign: [num_images, h * w] cluster of every patch.
        k: number of clusters (one row each).
        grid: patch grid (h, w).
        keys: image keys (column captions).
        title: caption of the figure.
        height: display height of each panel.
    """
    gh, gw = grid
    width = max(1, round(images[0].width * height / images[0].height))
    shown = [im.resize((width, height), Image.Resampling.BICUBIC) for im in images]
    radius = max(2, min(width / gw, height / gh) / 4)
    rows = []
    for c in range(k):
        cells = []
        for j, im in enumerate(shown):
            cell = im.copy()
            d = ImageDraw.Draw(cell)
            for p in np.flatnonzero(assign[j] == c):
                cy, cx = (p // gw + 0.5) * height / gh, (p % gw + 0.5) * width / gw
                d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=draw.RED, outline=(255, 255, 255))
            cells.append(draw.titled(cell, [keys[j]], fit=True) if c == 0 else cell)
        share = 100.0 * float((assign == c).mean())
        label = draw.titled(Image.new("RGB", (110, 1), draw.BG), [f"cluster {c}", f"{share:.1f}% of patches"])
        rows.append(draw.hstack([label] + cells))
    legend = draw.legend([(draw.RED, "patch assigned to the row's cluster (k-means on normalised patch tokens)")])
    return draw.vstack([draw.titled(draw.vstack(rows), [title], size=15), legend])


def write_patch_clusters(model: VisionTransformer, x: torch.Tensor, images: list[Image.Image], keys: list[str],
                         k: int, seed: int, step_tag: str, out_dir: Path, show: int = 6,
                         head_mlp: torch.nn.Module | None = None) -> Path:
    """Cluster the patches of all images, draw the first `show` images; returns the PNG path."""
    # Forward in chunks: clustering wants many images, memory should not grow with them.
    feats = torch.cat([patch_features(model, x[i:i + 64], head_mlp) for i in range(0, x.shape[0], 64)])
    _, assign = kmeans(feats.reshape(-1, feats.shape[-1]), k, seed=seed)
    assign = assign.reshape(feats.shape[0], feats.shape[1]).numpy()
    grid = model.grid_size(x.shape[-2:])
    space = "head" if head_mlp is not None else "backbone"
    title = (f"patch clusters ({space} features): k={k} over {feats.shape[0]} images x {feats.shape[1]} patches "
             f"({step_tag}, seed {seed})")
    fig = render_clusters(images[:show], assign[:show], k, grid, keys[:show], title)
    path = draw.output_path(out_dir, "patch-clusters", step_tag, f"{space}-k{k}-{len(keys)}imgs-{keys[0]}")
    fig.save(path)
    return path
