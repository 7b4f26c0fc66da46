"""Block-wise masks for masked image modelling (BEiT / iBOT), on a non-square patch grid.

A mask is grown block by block until it covers the target number of patches: each block's area is
drawn uniformly between a minimum block area ((min(H, W) // 3) ** 2 patches, iBOT's choice) and what
is still left to mask, its aspect ratio log-uniformly in [0.3, 1 / 0.3]. A block is accepted only
if it adds at least one new patch without overshooting the target. Every draw comes from the
`numpy.random.Generator` passed in, so a mask is a pure function of the generator's state: build
the generator with `personvit.rng.numpy_rng(seed, Stream.MASK, epoch, index)` and the mask of
sample `index` does not depend on worker count or timing.

Per-view ratios follow iBOT's `pred_ratio` / `pred_ratio_var` lists: for each (mean, var) pair a
ratio is drawn from U(mean - var, mean + var) (or taken as `mean` when var is 0), then one of the
pairs is picked uniformly. The recipe `[0, 0.3]` / `[0, 0.2]` leaves half the views unmasked and
masks the rest at U(0.1, 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["block_mask", "sample_mask_ratio", "view_masks"]

# Failed placement tries before a block round gives up (iBOT / BEiT use 10).
_MAX_TRIES = 10


def _grow_block(
    mask: np.ndarray,
    max_new: float,
    min_area: int,
    log_aspect: tuple[float, float],
    rng: np.random.Generator,
) -> int:
    """Try to add one rectangle of masked patches; returns how many patches it newly masked.

    Args:
        mask: [H, W] bool, updated in place.
        max_new: the most patches this block may add (target minus already masked).
        min_area: the smallest block area in patches.
        log_aspect: (log min aspect, log max aspect) of the block, aspect = h / w.
        rng: source of every draw.
    """
    height, width = mask.shape
    lo, hi = log_aspect
    for _ in range(_MAX_TRIES):
        # One generator call per try (area, aspect, top, left): the per-call overhead dominates.
        u_area, u_aspect, u_top, u_left = rng.random(4).tolist()
        # random.uniform semantics (as iBOT): when less than a minimum block is left, the area falls
        # between the two, so the last blocks can still close the gap.
        target_area = min_area + (max_new - min_area) * u_area
        aspect = math.exp(lo + (hi - lo) * u_aspect)
        h = int(round(math.sqrt(target_area * aspect)))
        w = int(round(math.sqrt(target_area / aspect)))
        if not (0 < h < height and 0 < w < width):
            continue
        top = int(u_top * (height - h + 1))
        left = int(u_left * (width - w + 1))
        window = mask[top : top + h, left : left + w]
        new = h * w - int(np.count_nonzero(window))
        if 0 < new <= max_new:
            window[...] = True
            return new
    return 0


def block_mask(
    grid_hw: tuple[int, int],
    ratio: float,
    generator: np.random.Generator,
    min_block_area: int | None = None,
    aspect_range: tuple[float, float] = (0.3, 1 / 0.3),
    flatten: bool = False,
) -> torch.Tensor:
    """A BEiT/iBOT block mask covering about `ratio` of a (H, W) patch grid.

    The mask stops at the target or when no block fits any more (the last blocks may leave it a
    few patches short, never over, as in iBOT).

    Args:
        grid_hw: patch grid (H, W), e.g. (16, 8) for 256x128 images with 16-pixel patches.
        ratio: fraction of patches to mask, in [0, 1).
        generator: numpy Generator all draws come from.
        min_block_area: smallest block in patches; default (min(H, W) // 3) ** 2, at least 1.
        aspect_range: (min, max) of a block's h / w, drawn log-uniformly.
        flatten: return [H * W] (row-major, the token order of a ViT) instead of [H, W].

    Returns:
        bool tensor, True where the patch is masked.
    """
    height, width = int(grid_hw[0]), int(grid_hw[1])
    if height < 1 or width < 1:
        raise ValueError(f"block_mask: grid_hw must be positive, got {tuple(grid_hw)}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"block_mask: ratio must be in [0, 1), got {ratio}")
    lo, hi = aspect_range
    if not 0 < lo <= hi:
        raise ValueError(f"block_mask: aspect_range must satisfy 0 < min <= max, got {aspect_range}")
    if min_block_area is None:
        min_block_area = max(1, (min(height, width) // 3) ** 2)

    mask = np.zeros((height, width), dtype=bool)
    target = ratio * height * width
    log_aspect = (math.log(lo), math.log(hi))
    count = 0
    while count < target:
        added = _grow_block(mask, target - count, min_block_area, log_aspect, generator)
        if added == 0:
            break
        count += added
    out = torch.from_numpy(mask)
    return out.flatten() if flatten else out


def sample_mask_ratio(
    pred_ratio: Sequence[float] | float,
    pred_ratio_var: Sequence[float] | float,
    generator: np.random.Generator,
) -> float:
    """One view's mask ratio from iBOT's `pred_ratio` / `pred_ratio_var` (lists or scalars).

    Args:
        pred_ratio: mean ratio per option, e.g. [0.0, 0.3].
        pred_ratio_var: half-width of the uniform range per option, e.g. [0.0, 0.2].
        generator: numpy Generator the draws come from.
    """
    means = [float(pred_ratio)] if isinstance(pred_ratio, (int, float)) else [float(m) for m in pred_ratio]
    vars_ = (
        [float(pred_ratio_var)]
        if isinstance(pred_ratio_var, (int, float))
        else [float(v) for v in pred_ratio_var]
    )
    if not means or len(means) != len(vars_):
        raise ValueError(
            f"pred_ratio {list(means)} and pred_ratio_var {list(vars_)} must be non-empty and of equal length"
        )
    choices = []
    for mean, var in zip(means, vars_):
        if not (0 <= var <= mean and mean + var < 1):
            raise ValueError(f"pred_ratio {mean} +- {var} must satisfy 0 <= var <= mean and mean + var < 1")
        # Draw for every option (as iBOT does) so the stream does not depend on which one is picked.
        choices.append(float(generator.uniform(mean - var, mean + var)) if var > 0 else mean)
    return choices[int(generator.integers(0, len(choices)))]


def view_masks(
    grid_hw: tuple[int, int],
    num_views: int,
    pred_ratio: Sequence[float] | float,
    pred_ratio_var: Sequence[float] | float,
    generator: np.random.Generator,
) -> torch.Tensor:
    """Masks for the `num_views` global views of one image: [num_views, H * W] bool.

    Args:
        grid_hw: patch grid (H, W) of the global views.
        num_views: number of masked (student global) views.
        pred_ratio: see `sample_mask_ratio`.
        pred_ratio_var: see `sample_mask_ratio`.
        generator: numpy Generator the draws come from.
    """
    masks = [
        block_mask(grid_hw, sample_mask_ratio(pred_ratio, pred_ratio_var, generator), generator, flatten=True)
        for _ in range(num_views)
    ]
    return torch.stack(masks)
