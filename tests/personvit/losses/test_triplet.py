"""Soft-margin batch-hard triplet loss against a per-anchor loop written from the definition."""

from __future__ import annotations

import math

import pytest
import torch

from personvit.losses.triplet import batch_hard_triplet_loss, euclidean_dist, hard_example_mining


def _reference(feats: torch.Tensor, labels: torch.Tensor, margin: float | None) -> float:
    n, total = feats.shape[0], 0.0
    for a in range(n):
        d = [
            math.sqrt(max(sum((x - y) ** 2 for x, y in zip(feats[a].tolist(), feats[j].tolist())), 1e-12))
            for j in range(n)
        ]
        d_ap = max(d[j] for j in range(n) if labels[j] == labels[a])
        d_an = min(d[j] for j in range(n) if labels[j] != labels[a])
        total += math.log1p(math.exp(d_ap - d_an)) if margin is None else max(0.0, margin + d_ap - d_an)
    return total / n


@pytest.mark.parametrize("margin", [None, 0.3])
@pytest.mark.parametrize("seed", range(3))
def test_matches_definition(seed: int, margin: float | None) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(24, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (24,), generator=g)
    labels[:2] = torch.tensor([0, 1])  # at least two identities
    got = batch_hard_triplet_loss(feats, labels, margin).item()
    assert got == pytest.approx(_reference(feats, labels, margin), rel=1e-5)


def test_mining_picks_hardest_pairs() -> None:
    feats = torch.tensor([[0.0], [1.0], [5.0], [0.5], [9.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    d_ap, d_an = hard_example_mining(euclidean_dist(feats, feats), labels)
    assert d_ap.tolist() == pytest.approx([5.0, 4.0, 5.0, 8.5, 8.5])
    assert d_an.tolist() == pytest.approx([0.5, 0.5, 4.0, 0.5, 4.0])


def test_well_separated_loss_small_collapsed_loss_log2() -> None:
    labels = torch.arange(4).repeat_interleave(4)
    separated = torch.nn.functional.one_hot(labels, 4).float() * 100 + 0.01 * torch.randn(16, 4)
    assert batch_hard_triplet_loss(separated, labels).item() < 1e-6
    collapsed = torch.zeros(16, 4)
    assert batch_hard_triplet_loss(collapsed, labels).item() == pytest.approx(math.log(2), abs=1e-5)


def test_gradients_finite_with_duplicate_features_and_half_precision_input() -> None:
    feats = torch.randn(8, 16).repeat(2, 1).requires_grad_(True)  # exact duplicates: distance 0
    labels = torch.arange(8).repeat(2)
    batch_hard_triplet_loss(feats, labels).backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    half = torch.randn(8, 16).to(torch.bfloat16)
    assert batch_hard_triplet_loss(half, torch.arange(4).repeat(2)).dtype == torch.float32


def test_single_identity_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least two identities"):
        batch_hard_triplet_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
