"""Ranking metrics under the Market-1501 protocol: mAP, CMC and mINP (SPEC.md section 8).

For each query the whole gallery is ranked by distance, ties broken by gallery order (as a stable
argsort would); gallery items with the query's pid AND camera are dropped; a query with no remaining
true match is skipped. Distractors (pid 0) and junk (pid -1) in the gallery are ordinary negatives.

Why no sort: every metric here depends only on the ranks of the true matches, and a query has few of
them (Market: ~14 of ~16k). The rank of the i-th match (in (distance, gallery index) order) is i plus
the number of negatives that come before it, which one `searchsorted` of the negatives against the
few sorted match distances gives. That is O(G log m) per query instead of O(G log G) for a full
argsort, never materialises a [Q, G] index matrix (MSMT17's would be 7.7 GB), and reads `distmat`
one row at a time, so a memory-mapped or float32 matrix is never copied.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["evaluate_rank", "match_ranks", "write_per_query_csv"]


def match_ranks(
    dist: np.ndarray, is_match: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """0-based ranks of the true matches of one query among the kept gallery items.

    The ranking orders kept items by (distance, gallery index), which is exactly the order of a
    stable argsort of the kept distances.

    Args:
        dist: [G] distances from the query to every gallery item.
        is_match: [G] bool, gallery item has the query's pid.
        keep: [G] bool, gallery item takes part in the ranking (not same pid and same camera).

    Returns:
        Sorted int64 array of the ranks of the kept matches (empty when there is none).
    """
    pos_idx = np.flatnonzero(is_match & keep)
    m = pos_idx.size
    if m == 0:
        return np.empty(0, dtype=np.int64)
    pos_d = dist[pos_idx]
    order = np.argsort(pos_d, kind="stable")  # matches among themselves: (distance, index) order
    pos_d, pos_idx = pos_d[order], pos_idx[order]
    neg_idx = np.flatnonzero(keep & ~is_match)
    neg_d = dist[neg_idx]
    # before[n] = number of matches that rank before negative n.
    before = np.searchsorted(pos_d, neg_d, side="left")
    upper = np.searchsorted(pos_d, neg_d, side="right")
    tied = np.flatnonzero(upper != before)
    if tied.size:
        # A negative with exactly a match's distance ranks after the tied matches with a smaller
        # gallery index. Within a tie group pos_idx is ascending (stable sort), so count per negative.
        lo, hi, nidx = before[tied], upper[tied], neg_idx[tied]
        slots = np.arange(m)
        in_group = (slots >= lo[:, None]) & (slots < hi[:, None])
        before[tied] += (in_group & (pos_idx[None, :] < nidx[:, None])).sum(axis=1)
    # Negatives ranked before match i = those whose `before` <= i.
    negs_before = np.cumsum(np.bincount(before, minlength=m + 1)[:m])
    return np.arange(m, dtype=np.int64) + negs_before


def _check_inputs(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> None:
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {distmat.shape}")
    nq, ng = distmat.shape
    for name, arr, n in (("q_pids", q_pids, nq), ("q_camids", q_camids, nq),
                         ("g_pids", g_pids, ng), ("g_camids", g_camids, ng)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n},) to match distmat {distmat.shape}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")


def _per_query(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each query's first-hit rank (0-based, -1 = no kept true match), AP, INP and kept true matches.

    A query's same-pid same-camera gallery items are removed (Market-1501 protocol); AP and INP are NaN
    for a query left without a true match.
    """
    nq = distmat.shape[0]
    first_rank = np.full(nq, -1, dtype=np.int64)
    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    num_matches = np.zeros(nq, dtype=np.int64)
    for q in range(nq):
        dist = distmat[q]
        if np.isnan(dist).any():
            raise ValueError(f"distmat row {q} contains NaN distances")
        is_match = g_pids == q_pids[q]
        keep = ~(is_match & (g_camids == q_camids[q]))
        ranks = match_ranks(dist, is_match, keep)
        if ranks.size == 0:
            continue
        hits = np.arange(1, ranks.size + 1)
        first_rank[q] = ranks[0]
        ap[q] = float(np.mean(hits / (ranks + 1)))  # mean of precision@k at each hit
        inp[q] = ranks.size / (ranks[-1] + 1)  # hits / rank of the hardest (last) hit
        num_matches[q] = ranks.size
    return first_rank, ap, inp, num_matches


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    return_per_query: bool = False,
) -> dict:
    """mAP, CMC and mINP of a query/gallery distance matrix under the Market-1501 protocol.

    Args:
        distmat: [Q, G] distances (smaller = more similar); any float dtype, read row by row.
        q_pids, g_pids: [Q] and [G] identity labels.
        q_camids, g_camids: [Q] and [G] camera ids.
        max_rank: length of the returned CMC curve. A query that keeps fewer than `max_rank` gallery
            items still contributes a full-length curve (its last value repeated), so CMC never falls.
        return_per_query: also return `per_query`, a dict of [Q] arrays: `ap` and `inp` (NaN for
            skipped queries), `first_rank` (1-based rank of the first true match, 0 when skipped)
            and `num_matches` (kept true matches).

    Returns:
        dict with `mAP` (float), `cmc` (float64 array [max_rank], fractions), `mINP` (float),
        `num_valid` (int, queries with at least one kept true match), and `per_query` on request.

    Raises:
        ValueError: on mismatched shapes, NaN distances, or when no query has a true match.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids).ravel(), np.asarray(g_pids).ravel()
    q_camids, g_camids = np.asarray(q_camids).ravel(), np.asarray(g_camids).ravel()
    _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    nq = distmat.shape[0]
    first_rank, ap, inp, num_matches = _per_query(distmat, q_pids, g_pids, q_camids, g_camids)
    valid = first_rank >= 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"no query has a true match in the gallery after removing same-pid same-camera items "
            f"({nq} queries, {distmat.shape[1]} gallery items): check the pids/camids of query and gallery"
        )
    # CMC from the first-hit histogram: cmc[k] = fraction of valid queries with first hit <= k.
    hist = np.bincount(np.minimum(first_rank[valid], max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hist) / num_valid
    result = {
        "mAP": float(np.mean(ap[valid])),
        "cmc": cmc.astype(np.float64),
        "mINP": float(np.mean(inp[valid])),
        "num_valid": num_valid,
    }
    if return_per_query:
        result["per_query"] = {
            "ap": ap,
            "inp": inp,
            "first_rank": np.where(valid, first_rank + 1, 0),
            "num_matches": num_matches,
        }
    return result


def write_per_query_csv(path: str | Path, result: dict, q_keys: Sequence[str] | None = None) -> Path:
    """Write the `per_query` part of an `evaluate_rank(..., return_per_query=True)` result as CSV.

    Args:
        path: output file.
        result: the dict returned by `evaluate_rank` with `return_per_query=True`.
        q_keys: optional [Q] query sample keys written as the first column.

    Returns:
        The path written.
    """
    if "per_query" not in result:
        raise ValueError("result has no per-query data: call evaluate_rank(..., return_per_query=True)")
    pq = result["per_query"]
    nq = pq["ap"].shape[0]
    if q_keys is not None and len(q_keys) != nq:
        raise ValueError(f"q_keys has {len(q_keys)} entries for {nq} queries")
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query_index", "key", "valid", "ap", "inp", "first_rank", "num_matches"])
        for q in range(nq):
            valid = bool(pq["first_rank"][q] > 0)
            writer.writerow([
                q, "" if q_keys is None else q_keys[q], int(valid),
                f"{pq['ap'][q]:.6f}" if valid else "", f"{pq['inp'][q]:.6f}" if valid else "",
                int(pq["first_rank"][q]), int(pq["num_matches"][q]),
            ])
    return path
