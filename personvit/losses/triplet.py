"""Soft-margin batch-hard triplet loss (Hermans et al. 2017), as in BoT and the PersonViT code.

For each anchor the hardest positive (farthest same-label sample) and hardest negative (closest
other-label sample) are mined inside the batch on Euclidean distances of the pre-BN feature;
the soft margin replaces `max(0, m + d_ap - d_an)` by `log(1 + exp(d_ap - d_an))`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["batch_hard_triplet_loss", "euclidean_dist", "hard_example_mining"]


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[n, m] Euclidean distances, clamped at 1e-12 before the sqrt so the gradient stays finite.

    Args:
        x: [n, D] features.
        y: [m, D] features.
    """
    xx = x.pow(2).sum(1, keepdim=True)
    yy = y.pow(2).sum(1, keepdim=True).t()
    return torch.addmm(xx + yy, x, y.t(), alpha=-2.0).clamp(min=1e-12).sqrt()


def hard_example_mining(dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hardest positive and negative distance of every anchor.

    Args:
        dist: [N, N] pairwise distances.
        labels: [N] integer labels.
    Returns:
        (d_ap [N], d_an [N]).
    Raises:
        ValueError: when some anchor has no negative (a batch of a single identity).
    """
    same = labels.view(-1, 1) == labels.view(1, -1)
    if bool(same.all(dim=1).any()):
        raise ValueError("batch-hard triplet mining needs at least two identities in the batch")
    # Masked max/min rather than gathering a fixed K: works for any label multiset.
    d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    return d_ap, d_an


def batch_hard_triplet_loss(
    feats: torch.Tensor, labels: torch.Tensor, margin: float | None = None
) -> torch.Tensor:
    """Batch-hard triplet loss, soft margin by default.

    Args:
        feats: [N, D] features (computed in float32 whatever the autocast dtype).
        labels: [N] identity labels.
        margin: None = soft margin `softplus(d_ap - d_an)`; a float = hinge `relu(margin + d_ap - d_an)`.
    Returns:
        Scalar mean loss over anchors.
    """
    feats = feats.float()
    d_ap, d_an = hard_example_mining(euclidean_dist(feats, feats), labels)
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(margin + d_ap - d_an).mean()
