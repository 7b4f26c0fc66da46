"""evaluate_rank against a slow per-query evaluator written from the protocol's definitions."""

from __future__ import annotations

import numpy as np
import pytest

from personvit.evaluation import evaluate_rank, write_per_query_csv


def slow_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Per query: rank by (distance, gallery index), drop same pid + same camera, score the hits."""
    aps, inps, cmcs = [], [], []
    for q in range(distmat.shape[0]):
        order = sorted(range(distmat.shape[1]), key=lambda g: (float(distmat[q, g]), g))
        kept = [g for g in order if not (g_pids[g] == q_pids[q] and g_camids[g] == q_camids[q])]
        hits = [g_pids[g] == q_pids[q] for g in kept]
        if not any(hits):
            continue
        found, precisions, last = 0, [], 0
        for k, hit in enumerate(hits, start=1):
            if hit:
                found += 1
                precisions.append(found / k)
                last = k
        first = hits.index(True) + 1
        aps.append(sum(precisions) / len(precisions))
        inps.append(found / last)
        cmcs.append([1.0 if first <= r else 0.0 for r in range(1, max_rank + 1)])
    return float(np.mean(aps)), np.mean(cmcs, axis=0), float(np.mean(inps)), len(aps)


def random_problem(rng, nq, ng, num_ids, num_cams, ties):
    q_pids = rng.integers(1, num_ids + 1, nq)
    # Gallery: some true ids, some distractors (0) and junk (-1).
    g_pids = rng.integers(-1, num_ids + 1, ng)
    q_cams = rng.integers(1, num_cams + 1, nq)
    g_cams = rng.integers(1, num_cams + 1, ng)
    if ties:
        distmat = rng.integers(0, 4, (nq, ng)).astype(np.float64)  # heavy ties
    else:
        distmat = rng.random((nq, ng)).astype(np.float32)
    # Pull some true matches closer so the metrics are not all near chance.
    close = (q_pids[:, None] == g_pids[None, :]) & (rng.random((nq, ng)) < 0.5)
    distmat = np.where(close, distmat * 0.3, distmat)
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed,nq,ng,num_ids,num_cams,max_rank", [
    (0, 40, 300, 20, 6, 50),
    (1, 30, 25, 8, 2, 50),  # short gallery: fewer items than max_rank
    (2, 25, 60, 5, 2, 10),  # two cameras: many same-camera matches dropped
    (3, 50, 200, 60, 3, 20),  # many ids: some queries have no match at all
])
def test_matches_slow_reference(seed, nq, ng, num_ids, num_cams, max_rank, ties):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, nq, ng, num_ids, num_cams, ties)
    ref_map, ref_cmc, ref_minp, ref_valid = slow_evaluate(*problem, max_rank)
    out = evaluate_rank(*problem, max_rank=max_rank)
    assert out["num_valid"] == ref_valid
    if num_ids > nq:  # many ids: the case really has queries without any match
        assert out["num_valid"] < nq
    assert out["mAP"] == pytest.approx(ref_map, abs=1e-12)
    assert out["mINP"] == pytest.approx(ref_minp, abs=1e-12)
    assert out["cmc"].shape == (max_rank,)
    np.testing.assert_allclose(out["cmc"], ref_cmc, atol=1e-12)
    assert np.all(np.diff(out["cmc"]) >= 0)
    assert isinstance(out["mAP"], float) and isinstance(out["num_valid"], int)


def test_hand_computed_example_and_tie_order():
    # Gallery order: match, non-match at equal distance -> ties go by gallery index.
    d = np.array([[0.1, 0.2, 0.3, 0.4]])
    out = evaluate_rank(d, np.array([7]), np.array([0, 7, -1, 7]), np.array([1]), np.array([2, 2, 2, 2]), max_rank=5)
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert out["mINP"] == pytest.approx(2 / 4)
    np.testing.assert_array_equal(out["cmc"], [0, 1, 1, 1, 1])

    tied = np.array([[0.5, 0.5]])
    first = evaluate_rank(tied, np.array([1]), np.array([1, 2]), np.array([1]), np.array([2, 2]), max_rank=2)
    second = evaluate_rank(tied, np.array([1]), np.array([2, 1]), np.array([1]), np.array([2, 2]), max_rank=2)
    assert first["mAP"] == 1.0 and second["mAP"] == 0.5


def test_same_camera_match_is_dropped_not_counted():
    d = np.array([[0.1, 0.2, 0.3]])
    # The nearest item is the same person from the same camera: it must not count nor occupy rank 1.
    out = evaluate_rank(d, np.array([3]), np.array([3, 3, 5]), np.array([1]), np.array([1, 2, 2]), max_rank=3)
    assert out["mAP"] == 1.0
    np.testing.assert_array_equal(out["cmc"], [1, 1, 1])


def test_no_valid_query_is_a_clear_error():
    d = np.zeros((2, 3))
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(d, np.array([1, 2]), np.array([1, 2, 0]), np.array([1, 1]), np.array([1, 1, 2]))


def test_bad_shapes_and_nan_name_the_culprit():
    d = np.zeros((2, 3))
    with pytest.raises(ValueError, match="g_camids"):
        evaluate_rank(d, np.array([1, 2]), np.array([1, 2, 0]), np.array([1, 1]), np.array([1, 1]))
    d[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1 contains NaN"):
        evaluate_rank(d, np.array([1, 2]), np.array([1, 2, 0]), np.array([1, 1]), np.array([2, 2, 2]))


def test_per_query_csv(tmp_path):
    rng = np.random.default_rng(5)
    problem = random_problem(rng, 12, 40, 30, 3, ties=False)
    out = evaluate_rank(*problem, max_rank=5, return_per_query=True)
    pq = out["per_query"]
    valid = pq["first_rank"] > 0
    assert valid.sum() == out["num_valid"]
    assert np.nanmean(pq["ap"]) == pytest.approx(out["mAP"])
    keys = [f"q{i:03d}" for i in range(12)]
    path = write_per_query_csv(tmp_path / "per_query.csv", out, keys)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("query_index,key,valid,ap")
    assert len(lines) == 13 and lines[1].split(",")[1] == "q000"
    assert sum(int(line.split(",")[2]) for line in lines[1:]) == out["num_valid"]
