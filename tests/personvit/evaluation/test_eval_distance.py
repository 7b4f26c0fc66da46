"""Chunked distances against direct definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from personvit.evaluation import pairwise_distance


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_metrics_match_definitions(chunk_size):
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(23, 12, generator=g), torch.randn(41, 12, generator=g)
    diff = q[:, None, :].double() - gal[None, :, :].double()
    eu = diff.pow(2).sum(-1).sqrt()
    cos = 1 - torch.nn.functional.cosine_similarity(q[:, None, :].double(), gal[None, :, :].double(), dim=-1)
    np.testing.assert_allclose(pairwise_distance(q, gal, "euclidean", chunk_size), eu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pairwise_distance(q, gal, "sqeuclidean", chunk_size), eu ** 2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pairwise_distance(q, gal, "cosine", chunk_size), cos, atol=1e-5)


def test_identical_vectors_have_zero_not_nan_distance():
    x = torch.randn(5, 64) * 100
    d = pairwise_distance(x, x, "euclidean")
    assert torch.isfinite(d).all() and (d >= 0).all()
    assert torch.diagonal(d).max() < 1e-2 * d.max()


def test_float64_output_and_errors():
    q = torch.randn(3, 4, dtype=torch.float64)
    assert pairwise_distance(q, q, out_dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="same D"):
        pairwise_distance(q, torch.randn(3, 5))
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        pairwise_distance(q, q, "l1")
