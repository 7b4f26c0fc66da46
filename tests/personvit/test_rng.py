"""Deterministic keyed randomness."""

import numpy as np
import torch

from personvit.rng import Stream, derive_seed, numpy_rng, seed_step, torch_generator


def test_same_key_same_draws_different_keys_differ():
    a = numpy_rng(7, Stream.CROP, epoch=2, index=11).random(4)
    b = numpy_rng(7, Stream.CROP, epoch=2, index=11).random(4)
    assert np.array_equal(a, b)
    for other in [numpy_rng(7, Stream.COLOR, 2, 11), numpy_rng(7, Stream.CROP, 3, 11),
                  numpy_rng(7, Stream.CROP, 2, 12), numpy_rng(8, Stream.CROP, 2, 11)]:
        assert not np.array_equal(a, other.random(4))


def test_torch_generator_and_step_seed():
    x = torch.rand(3, generator=torch_generator(1, Stream.MASK, 0, 5))
    y = torch.rand(3, generator=torch_generator(1, Stream.MASK, 0, 5))
    assert torch.equal(x, y)
    seed_step(3, step=10, rank=1)
    u = torch.rand(2)
    seed_step(3, step=10, rank=1)
    assert torch.equal(u, torch.rand(2))
    seed_step(3, step=10, rank=0)
    assert not torch.equal(u, torch.rand(2))
    assert 0 <= derive_seed(1, 2, 3) < 2**63
