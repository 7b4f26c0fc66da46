"""Deterministic randomness derived from (seed, epoch, position).

Every random choice in the toolkit (sample order, crops, colour, masks, dropout) is drawn from a
generator keyed by *what* is being drawn, never from a global generator whose state depends on how
many workers ran or in which order. That is what makes a run killed at any moment and restarted
end bitwise equal to an uninterrupted one, and what makes the stream identical for 0 or N loader
workers.

Streams separate independent uses of the same (seed, epoch, index) so that, say, the crop of
sample 7 and the mask of sample 7 are uncorrelated.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: shard_tools uses this module without paying ~3 s for torch
    import torch


class Stream(enum.IntEnum):
    """Named purposes; each gets an independent generator for the same (seed, epoch, index)."""

    ORDER = 0  # shard / sample order of an epoch
    CROP = 1  # geometric augmentation (crops, flips)
    COLOR = 2  # photometric parameters
    MASK = 3  # block masks
    MODEL = 4  # dropout / drop path drawn from the global generator (seed_step: per step and rank)
    SAMPLER = 5  # PK sampler
    ERASE = 6  # random erasing
    SYNTH = 7  # synthetic data generation
    INIT = 8  # model initialisation
    DROP_PATH = 9  # per-sample drop path of pretraining (models/drop_path.py)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed from a base seed and integer keys (SeedSequence hashing, order-sensitive).

    Args:
        seed: the run's base seed.
        *keys: integers that identify the draw, e.g. ``(Stream.CROP, epoch, index)``.
    """
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *[int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def numpy_rng(seed: int, stream: int, epoch: int = 0, index: int = 0) -> np.random.Generator:
    """A numpy Generator for one (stream, epoch, index) draw."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, stream, epoch, index)))


def torch_generator(seed: int, stream: int, epoch: int = 0, index: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator for one (stream, epoch, index) draw."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, stream, epoch, index))
    return g


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Seed torch's global generators for one training step (dropout / drop path).

    Drop path draws from the global generator inside modules; reseeding it per (step, rank) makes
    the draws a function of the position in training, not of history.
    """
    import torch

    torch.manual_seed(derive_seed(seed, Stream.MODEL, step, rank))
