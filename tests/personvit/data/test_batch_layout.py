"""`BatchLayout`: a step's global sample list is the same for any world size that divides it."""

from __future__ import annotations

import pytest

from personvit.data.batch_layout import BatchLayout, LayoutError


def _step_positions(layout: BatchLayout, world: int, max_micro: int, step: int) -> list[list[int]]:
    """Per rank, its micro-batches' positions concatenated, in rank order."""
    out = []
    for r in range(world):
        share = layout.share(r, world, max_micro)
        rank = []
        for k in range(share.micro_batches):
            rank += layout.positions(step, share.first + k * share.micro_size, share.micro_size)
        out.append(rank)
    return out


@pytest.mark.parametrize(("world", "max_micro", "accumulate"), [(4, 8, 1), (2, 8, 2), (1, 8, 4), (8, 8, 1), (2, 5, 4), (2, 16, 1)])
def test_any_dividing_world_size_reads_the_same_global_batch(world, max_micro, accumulate):
    layout = BatchLayout.fresh(total=300, world_size=4, batch_size_per_rank=8)  # G = 32, 9 steps
    assert layout.batches_per_epoch == 9 and layout.global_batch == 32
    reference = [p for rank in _step_positions(layout, 4, 8, 5) for p in rank]
    ranks = _step_positions(layout, world, max_micro, 5)
    assert [p for rank in ranks for p in rank] == reference
    share = layout.share(0, world, max_micro)
    assert share.micro_batches == accumulate and share.micro_size <= max_micro
    assert share.micro_size * share.micro_batches == 32 // world


def test_the_first_starts_ranks_read_contiguous_blocks_and_steps_cover_each_position_once():
    layout = BatchLayout.fresh(total=100, world_size=3, batch_size_per_rank=4)  # 8 steps of 12
    seen = [p for step in range(8) for rank in _step_positions(layout, 3, 4, step) for p in rank]
    assert sorted(seen) == list(range(96))
    assert layout.positions(2, 4, 4) == [8 * 4 + 2 * 4 + o for o in range(4)]  # rank 1's block, step 2


def test_layouts_that_cannot_be_shared_say_why():
    layout = BatchLayout(4, 8, 3)
    with pytest.raises(LayoutError, match="global batch of 32 .* cannot be split evenly over 3 ranks"):
        layout.share(0, 3, 8)
    with pytest.raises(LayoutError, match="cannot fill one batch on each of 4 ranks"):
        BatchLayout.fresh(31, 4, 8)
    with pytest.raises(LayoutError, match="positive"):
        BatchLayout(0, 8, 3)
