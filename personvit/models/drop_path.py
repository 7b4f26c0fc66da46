"""Stochastic depth whose draw belongs to the sample, not to the process (elastic resume).

timm's `DropPath` draws one Bernoulli per row from torch's global generator, so whether sample `x`
drops block 3 depends on which rank holds it, which rows came before it and what was drawn earlier:
the same global batch run by 2 ranks instead of 4 drops different paths. `SampleDropPath` can read
its decision from a uniform *per (row, slot)* given for the current forward pass instead, where the
trainer derives each sample's uniforms from (seed, epoch, position): the decision then follows the
sample across world sizes and micro-batches. Without given uniforms it behaves exactly like timm's
`DropPath` (fine-tuning, tests), drawing from the global generator.

A ViT of depth `D` has `2 * D` drop-path slots: slot `2 * i` after block `i`'s attention, `2 * i + 1`
after its MLP.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from personvit.rng import Stream, numpy_rng

__all__ = ["SampleDropPath", "drop_path_uniforms", "install_sample_drop_path", "sample_drop_uniforms"]

# [rows, slots] uniforms in [0, 1) for the rows of the backbone pass in progress, or None.
_UNIFORMS: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("drop_path_uniforms", default=None)


@contextlib.contextmanager
def drop_path_uniforms(uniforms: torch.Tensor | None) -> Iterator[None]:
    """Within the block, `SampleDropPath` slot `s` keeps row `r` iff `uniforms[r, s] < 1 - p`.

    Args:
        uniforms: [rows, slots] float tensor on the activations' device, rows in the order of the
            backbone's input batch; None restores timm's global-generator draw.
    """
    token = _UNIFORMS.set(uniforms)
    try:
        yield
    finally:
        _UNIFORMS.reset(token)


class SampleDropPath(nn.Module):
    """Drop the residual branch of whole rows with probability `drop_prob` (scaled by 1 / keep).

    Args:
        drop_prob: probability of dropping a row's branch.
        slot: this module's column in the uniforms of `drop_path_uniforms`.
    """

    def __init__(self, drop_prob: float, slot: int) -> None:
        super().__init__()
        self.drop_prob, self.slot = float(drop_prob), int(slot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        uniforms = _UNIFORMS.get()
        if uniforms is None:
            keep = x.new_empty(shape).bernoulli_(keep_prob)  # timm's DropPath, draw for draw
        else:
            if uniforms.shape[0] != x.shape[0]:
                raise ValueError(f"SampleDropPath: {uniforms.shape[0]} rows of uniforms for a batch of {x.shape[0]}")
            keep = (uniforms[:, self.slot] < keep_prob).to(x.dtype).view(shape)
        return x * keep.div_(keep_prob)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, slot={self.slot}"


def install_sample_drop_path(blocks: nn.Sequential) -> int:
    """Replace timm `Block`s' `drop_path1` / `drop_path2` by `SampleDropPath`; returns the slot count.

    Blocks without drop path keep their `nn.Identity()`; no parameter or buffer changes, so state
    dicts are unaffected.
    """
    for i, block in enumerate(blocks):
        for j, name in enumerate(("drop_path1", "drop_path2")):
            current = getattr(block, name)
            prob = float(getattr(current, "drop_prob", 0.0))
            if prob > 0.0:
                setattr(block, name, SampleDropPath(prob, 2 * i + j))
    return 2 * len(blocks)


def sample_drop_uniforms(
    seed: int, epoch: int, positions: Sequence[int], views: int, slots: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """[views, len(positions), slots] uniforms, sample `p`'s from `numpy_rng(seed, Stream.DROP_PATH, epoch, p)`.

    Args:
        seed: run seed.
        epoch: the samples' epoch.
        positions: the samples' epoch positions (`PretrainBatch.positions`).
        views: views per sample (2 global + n local).
        slots: drop-path slots of the backbone (`VisionTransformer.drop_path_slots`).
        device: where the result goes.
    """
    draws = np.stack([numpy_rng(seed, Stream.DROP_PATH, epoch, p).random((views, slots), dtype=np.float32) for p in positions])
    return torch.from_numpy(draws).transpose(0, 1).contiguous().to(device, non_blocking=True)
