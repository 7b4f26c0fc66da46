"""Block masks: determinism, coverage statistics, block shapes, per-view ratios, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from personvit.masking import _grow_block, block_mask, sample_mask_ratio, view_masks
from personvit.rng import Stream, numpy_rng


def test_same_generator_state_gives_same_mask_and_seeds_differ():
    a = block_mask((16, 8), 0.4, numpy_rng(3, Stream.MASK, 1, 7))
    b = block_mask((16, 8), 0.4, numpy_rng(3, Stream.MASK, 1, 7))
    c = block_mask((16, 8), 0.4, numpy_rng(3, Stream.MASK, 1, 8))
    assert a.dtype == torch.bool and a.shape == (16, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("grid", [(16, 8), (14, 14), (6, 4)])
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_coverage_close_to_ratio_never_above(grid, ratio):
    n = grid[0] * grid[1]
    cover = np.array([block_mask(grid, ratio, np.random.default_rng(i)).sum().item() for i in range(300)])
    target = ratio * n
    assert cover.max() <= math.ceil(target)  # a block never overshoots the target
    # Blocks may stop a few patches short (as iBOT); on average within 8% of the grid.
    assert target - 0.08 * n <= cover.mean() <= target
    assert cover.min() > 0


def test_ratio_zero_masks_nothing_and_flatten_is_row_major():
    rng = np.random.default_rng(0)
    assert not block_mask((16, 8), 0.0, rng).any()
    m2d = block_mask((16, 8), 0.3, np.random.default_rng(5))
    m1d = block_mask((16, 8), 0.3, np.random.default_rng(5), flatten=True)
    assert m1d.shape == (128,) and torch.equal(m1d, m2d.flatten())


def test_masks_are_blocks_not_scattered_patches():
    # In a block mask almost every masked patch has a masked 4-neighbour; scattered masks at 30%
    # would give about 1 - 0.7^4 = 76%.
    with_neighbour, total = 0, 0
    for i in range(200):
        m = block_mask((16, 8), 0.3, np.random.default_rng(i)).numpy()
        p = np.pad(m, 1)
        nb = p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
        with_neighbour += int((m & nb).sum())
        total += int(m.sum())
    assert with_neighbour / total > 0.97


def test_single_blocks_respect_area_and_aspect_ranges():
    rng = np.random.default_rng(0)
    log_aspects = []
    for _ in range(400):
        mask = np.zeros((64, 64), dtype=bool)
        added = _grow_block(mask, 400, 16, (math.log(0.3), math.log(1 / 0.3)), rng)
        assert added > 0
        rows, cols = np.nonzero(mask)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h * w == added  # one solid rectangle
        assert 9 <= added <= 400 * 1.3  # rounding of sqrt(area * aspect) moves the area a little
        log_aspects.append(math.log(h / w))
    log_aspects = np.array(log_aspects)
    assert log_aspects.min() >= math.log(0.3) - 0.35 and log_aspects.max() <= math.log(1 / 0.3) + 0.35
    assert (log_aspects > 0.5).mean() > 0.15 and (log_aspects < -0.5).mean() > 0.15  # tall and wide
    assert abs(log_aspects.mean()) < 0.15  # log-uniform, symmetric around square


def test_recipe_ratios_half_unmasked_rest_uniform():
    rng = np.random.default_rng(0)
    r = np.array([sample_mask_ratio([0.0, 0.3], [0.0, 0.2], rng) for _ in range(4000)])
    zero = r == 0.0
    assert 0.45 < zero.mean() < 0.55
    assert r[~zero].min() >= 0.1 and r[~zero].max() <= 0.5
    assert abs(r[~zero].mean() - 0.3) < 0.01
    assert sample_mask_ratio(0.25, 0.0, rng) == 0.25


def test_view_masks_shape_and_determinism():
    a = view_masks((16, 8), 2, [0.0, 0.3], [0.0, 0.2], numpy_rng(0, Stream.MASK, 0, 3))
    b = view_masks((16, 8), 2, [0.0, 0.3], [0.0, 0.2], numpy_rng(0, Stream.MASK, 0, 3))
    assert a.shape == (2, 128) and a.dtype == torch.bool and torch.equal(a, b)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda g: block_mask((16, 8), 1.0, g), "ratio"),
        (lambda g: block_mask((0, 8), 0.3, g), "grid_hw"),
        (lambda g: sample_mask_ratio([0.0, 0.3], [0.0], g), "equal length"),
        (lambda g: sample_mask_ratio([0.1], [0.2], g), "var <= mean"),
    ],
)
def test_bad_input_names_the_culprit(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.random.default_rng(0))
