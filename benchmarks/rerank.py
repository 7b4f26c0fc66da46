"""Benchmark: sparse blockwise `rerank` vs the classic dense k-reciprocal re-ranking.

The baseline is the `re_ranking(probFea, galFea, k1, k2, lambda_value)` function shipped with
TransReID / the PersonViT authors' code (dense (Q+G)^2 float32 distances, int argsort, float16 V),
transcribed below. Each measurement runs in its own subprocess on the same clustered random features
(dim 384, L2-normalised, as ViT-S features); peak RSS is the process high-water mark during the call
(reset after the features are built; it includes the ~0.5 GB torch import). Targets (issue 6):
Market size <= 0.2x the baseline's time and <= 2 GB; MSMT17 size runnable on 24 GiB (ours only:
the baseline's dense (Q+G)^2 matrices would need over 100 GB).

    python benchmarks/rerank.py [--sizes market msmt17] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_results  # noqa: E402

SIZES = {"market": (3368, 15913, 751), "msmt17": (11659, 82161, 3060), "tiny": (300, 1500, 100)}


def classic_re_ranking(probFea, galFea, k1, k2, lambda_value):  # noqa: N803 - names as published
    """Baseline: the classic dense implementation (TransReID utils/reranking.py), unchanged in logic."""
    import torch

    query_num = probFea.size(0)
    all_num = query_num + galFea.size(0)
    feat = torch.cat([probFea, galFea])
    distmat = torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(all_num, all_num) + \
        torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(all_num, all_num).t()
    distmat.addmm_(feat, feat.t(), beta=1, alpha=-2)
    original_dist = distmat.cpu().numpy()
    del feat, distmat
    gallery_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float16)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            cand_fwd = initial_rank[candidate, :int(np.around(k1 / 2)) + 1]
            cand_bwd = initial_rank[cand_fwd, :int(np.around(k1 / 2)) + 1]
            fi_candidate = np.where(cand_bwd == candidate)[0]
            cand_k_reciprocal_index = cand_fwd[fi_candidate]
            if len(np.intersect1d(cand_k_reciprocal_index, k_reciprocal_index)) > 2 / 3 * len(cand_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, cand_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float16)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float16)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float16)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    del original_dist, V, jaccard_dist
    return final_dist[:query_num, query_num:]


def make_problem(size: str, seed: int = 0):
    import torch

    nq, ng, num_ids = SIZES[size]
    rng = np.random.default_rng(seed)
    dim = 384
    centres = rng.normal(size=(num_ids, dim)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, num_ids, nq), rng.integers(0, num_ids, ng)
    q_cams, g_cams = rng.integers(0, 6, nq), rng.integers(0, 6, ng)

    def feats(pids):
        f = centres[pids] + 2.5 * rng.normal(size=(pids.size, dim)).astype(np.float32)
        return torch.nn.functional.normalize(torch.from_numpy(f), dim=1)

    return feats(q_pids), feats(g_pids), q_pids, g_pids, q_cams, g_cams


def proc_status_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (current) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(impl: str, size: str, threads: int) -> dict:
    import torch

    from personvit.evaluation import evaluate_rank, rerank

    torch.set_num_threads(threads)
    q, g, q_pids, g_pids, q_cams, g_cams = make_problem(size)
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to the current RSS
        f.write("5")
    rss_before = proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    if impl == "ours":
        dist = rerank(q, g, k1=20, k2=6, lambda_value=0.3)
    else:
        dist = classic_re_ranking(q, g, 20, 6, 0.3)
    seconds = time.perf_counter() - t0
    peak = proc_status_mb("VmHWM")
    metrics = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
    record = {"impl": impl, "size": size, "seconds": seconds, "peak_rss_mb": peak,
              "extra_rss_mb": peak - rss_before, "mAP": metrics["mAP"], "rank1": float(metrics["cmc"][0])}
    if size != "msmt17":  # keep a sample of the output for the cross-check in the parent
        record["sample"] = np.asarray(dist[:50], dtype=np.float32).tolist()
    return record


def run_child(impl: str, size: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, __file__, "--child", impl, size, "--threads", str(threads)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{impl}/{size} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["market"], choices=list(SIZES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.threads)))
        return 0

    rows, summary = [], {}
    for size in args.sizes:
        ours = run_child("ours", size, args.threads)
        entry = {"ours": ours}
        rows.append(ours)
        if size != "msmt17":
            base = run_child("classic", size, args.threads)
            rows.append(base)
            diff = np.abs(np.asarray(ours.pop("sample")) - np.asarray(base.pop("sample")))
            entry.update(classic=base, time_ratio=ours["seconds"] / base["seconds"],
                         rss_ratio=ours["peak_rss_mb"] / base["peak_rss_mb"],
                         max_abs_diff_first50_rows=float(diff.max()), abs_diff_mAP=abs(ours["mAP"] - base["mAP"]))
        summary[size] = entry

    print(f"{'size':8} {'impl':8} {'seconds':>9} {'peak RSS MB':>12} {'extra MB':>9} {'mAP':>8} {'R1':>7}")
    for r in rows:
        print(f"{r['size']:8} {r['impl']:8} {r['seconds']:9.1f} {r['peak_rss_mb']:12.0f} {r['extra_rss_mb']:9.0f} "
              f"{r['mAP']:8.4f} {r['rank1']:7.4f}")
    for size, e in summary.items():
        if "time_ratio" in e:
            print(f"{size}: time ours/classic = {e['time_ratio']:.3f} (target <= 0.2), peak RSS ours/classic = "
                  f"{e['rss_ratio']:.2f}, max |diff| = {e['max_abs_diff_first50_rows']:.1e} (classic V is float16), "
                  f"|dmAP| = {e['abs_diff_mAP']:.1e}")
    write_results(Path(__file__).with_name("rerank.json"), summary, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
