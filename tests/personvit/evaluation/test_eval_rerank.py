"""Sparse blockwise re-ranking against the classic dense k-reciprocal algorithm (written here)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from personvit.evaluation import evaluate_rank, rerank, rerank_distances

rerank_mod = importlib.import_module("personvit.evaluation.rerank")  # the package re-exports a function of the same name


def dense_rerank(q, g, k1, k2, lam):
    """Zhong et al.'s algorithm as in the classic code, dense, float64, stable argsort."""
    feat = np.concatenate([q, g]).astype(np.float64)
    nq, n = q.shape[0], feat.shape[0]
    sq = (feat ** 2).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * feat @ feat.T, 0)  # squared Euclidean
    dist = dist / dist.max(axis=1, keepdims=True)
    rank = np.argsort(dist, axis=1, kind="stable")
    V = np.zeros((n, n))
    kh = int(np.around(k1 / 2))
    for i in range(n):
        fwd = rank[i, :k1 + 1]
        recip = fwd[(rank[fwd, :k1 + 1] == i).any(axis=1)]
        expansion = recip
        for c in recip:
            cf = rank[c, :kh + 1]
            crecip = cf[(rank[cf, :kh + 1] == c).any(axis=1)]
            if len(np.intersect1d(crecip, recip)) > 2 / 3 * len(crecip):
                expansion = np.append(expansion, crecip)
        expansion = np.unique(expansion)
        w = np.exp(-dist[i, expansion])
        V[i, expansion] = w / w.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jac = np.empty((nq, n))
    for i in range(nq):
        inter = np.minimum(V[i][None, :], V).sum(axis=1)
        jac[i] = 1 - inter / (2 - inter)
    return (jac * (1 - lam) + dist[:nq] * lam)[:, nq:]


def clustered_feats(rng, num_ids, per_id, dim):
    centres = rng.normal(size=(num_ids, dim))
    pids = np.repeat(np.arange(num_ids), per_id)
    feats = centres[pids] + 0.8 * rng.normal(size=(pids.size, dim))
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32), pids


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (8, 1, 0.0), (5, 3, 1.0), (7, 4, 0.5)])
def test_matches_dense_reference(k1, k2, lam):
    rng = np.random.default_rng(k1 * 10 + k2)
    feats, pids = clustered_feats(rng, num_ids=15, per_id=8, dim=16)
    order = rng.permutation(len(pids))
    feats, pids = feats[order], pids[order]
    q, g = feats[:30], feats[30:]
    ref = dense_rerank(q, g, k1, k2, lam)
    out = rerank(q, g, k1=k1, k2=k2, lambda_value=lam)
    assert out.shape == (30, g.shape[0]) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=2e-5)
    # Re-ranking must change the distances when the Jaccard term is used.
    if lam < 1.0:
        plain = ((q[:, None] - g[None]) ** 2).sum(-1)
        assert not np.allclose(out, plain / plain.max(), atol=1e-3)


@pytest.mark.parametrize("budget", [64, 700, 5000])
def test_small_blocks_give_the_same_answer(monkeypatch, budget):
    rng = np.random.default_rng(1)
    feats, _ = clustered_feats(rng, num_ids=10, per_id=6, dim=8)
    q, g = feats[:12], feats[12:]
    full = rerank(q, g)
    # Force many blocks (one row each at 64, several rows of uneven size above) in every stage.
    monkeypatch.setattr(rerank_mod, "_BLOCK_ELEMS", budget)
    monkeypatch.setattr(rerank_mod, "_EXPAND_ELEMS", budget)
    np.testing.assert_allclose(rerank(q, g), full, atol=1e-6)  # BLAS block shapes differ by ulps


def test_distance_input_equals_feature_input():
    rng = np.random.default_rng(2)
    feats, _ = clustered_feats(rng, num_ids=8, per_id=6, dim=8)
    q, g = torch.from_numpy(feats[:10]), torch.from_numpy(feats[10:])
    out = rerank(q, g, k1=6, k2=3)
    d = lambda a, b: torch.cdist(a.double(), b.double()).numpy()  # noqa: E731 - Euclidean, not squared
    from_dist = rerank_distances(d(q, g), d(q, q), d(g, g), k1=6, k2=3)
    np.testing.assert_allclose(from_dist, out, atol=1e-5)
    sq = lambda a, b: d(a, b) ** 2  # noqa: E731
    np.testing.assert_allclose(rerank_distances(sq(q, g), sq(q, q), sq(g, g), squared=True, k1=6, k2=3), out, atol=1e-5)


def test_rerank_improves_map_on_clustered_data():
    rng = np.random.default_rng(3)
    feats, pids = clustered_feats(rng, num_ids=30, per_id=10, dim=16)
    cams = np.tile(np.arange(10), 30)
    qm = cams == 0
    q, g = feats[qm], feats[~qm]
    plain = ((q[:, None] - g[None]) ** 2).sum(-1)
    before = evaluate_rank(plain, pids[qm], pids[~qm], cams[qm], cams[~qm])["mAP"]
    after = evaluate_rank(rerank(q, g, k1=8, k2=3), pids[qm], pids[~qm], cams[qm], cams[~qm])["mAP"]
    assert after > before


def test_bad_parameters_are_clear_errors():
    feats = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="k1 must be"):
        rerank(feats[:3], feats[3:], k1=10)
    with pytest.raises(ValueError, match="k2 must be"):
        rerank(feats[:3], feats[3:], k1=4, k2=6)
    with pytest.raises(ValueError, match="same D"):
        rerank(feats[:3], feats[3:, :2])


@pytest.mark.parametrize("k", [1, 5, 21, 40])
def test_neighbour_lists_break_ties_like_a_stable_argsort(k):
    g = torch.Generator().manual_seed(k)
    x = torch.randint(0, 6, (64, 40), generator=g).float()  # many ties, also across the k-th place
    expected = np.argsort(x.numpy(), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(rerank_mod._stable_topk_smallest(x, k).numpy(), expected)
