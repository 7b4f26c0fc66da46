"""Benchmark: `evaluate_rank` vs a TransReID-style evaluator (full argsort + per-query numpy loop).

Each measurement runs in its own subprocess on the same synthetic problem (clustered random
features, Euclidean float32 distances), so peak RSS is per implementation. Peak RSS is the
process high-water mark during the evaluation call (reset after the problem is built), i.e. it
includes the resident distance matrix and the ~0.5 GB of the torch import; "eval extra" is what
the call added on top. Targets (issue 6): Market size <= 0.1x the baseline's
time and < 1 GB; MSMT17 size < 8 GB (the baseline is not run there: its [Q, G] int64 argsort alone
is 7.7 GB).

    python benchmarks/eval.py [--sizes market msmt17] [--threads 1]
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

SIZES = {  # num_query, num_gallery, num_ids, num_cams
    "market": (3368, 15913, 751, 6),
    "msmt17": (11659, 82161, 3060, 15),
    "tiny": (300, 1500, 100, 6),
}


def transreid_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Baseline: the evaluator of TransReID / reid-strong-baseline (+ fast-reid's mINP), as published."""
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_AP, all_INP, num_valid_q = [], [], [], 0.0
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        orig_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        pos_idx = np.where(orig_cmc == 1)[0]
        all_INP.append(cmc[np.max(pos_idx)] / (np.max(pos_idx) + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        tmp_cmc = orig_cmc.cumsum()
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * orig_cmc
        all_AP.append(tmp_cmc.sum() / orig_cmc.sum())
    all_cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
    return {"mAP": float(np.mean(all_AP)), "cmc": all_cmc, "mINP": float(np.mean(all_INP)),
            "num_valid": int(num_valid_q)}


def make_problem(size: str, seed: int = 0):
    import torch

    from personvit.evaluation import pairwise_distance

    nq, ng, num_ids, num_cams = SIZES[size]
    rng = np.random.default_rng(seed)
    dim = 64
    centres = rng.normal(size=(num_ids + 1, dim)).astype(np.float32)
    q_pids = rng.integers(1, num_ids + 1, nq)
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, ng - ng // 5), np.zeros(ng // 5, dtype=np.int64)])
    q_cams, g_cams = rng.integers(0, num_cams, nq), rng.integers(0, num_cams, ng)

    def feats(pids):
        f = centres[pids] + 1.2 * rng.normal(size=(pids.size, dim)).astype(np.float32)
        return torch.nn.functional.normalize(torch.from_numpy(f), dim=1)

    distmat = pairwise_distance(feats(q_pids), feats(g_pids)).numpy()
    return distmat, q_pids, g_pids, q_cams, g_cams


def proc_status_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (current) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(impl: str, size: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    problem = make_problem(size)
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to the current RSS
        f.write("5")
    rss_before = proc_status_mb("VmRSS")  # torch import + the distance matrix
    if impl == "ours":
        from personvit.evaluation import evaluate_rank as fn
    else:
        fn = transreid_eval
    t0 = time.perf_counter()
    out = fn(*problem, max_rank=50)
    seconds = time.perf_counter() - t0
    return {"impl": impl, "size": size, "seconds": seconds, "peak_rss_mb": proc_status_mb("VmHWM"),
            "extra_rss_mb": proc_status_mb("VmHWM") - rss_before,
            "distmat_mb": problem[0].nbytes / 2**20, "mAP": out["mAP"], "mINP": out["mINP"],
            "rank1": float(out["cmc"][0]), "num_valid": out["num_valid"]}


def run_child(impl: str, size: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, __file__, "--child", impl, size, "--threads", str(threads)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{impl}/{size} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["market", "msmt17"], choices=list(SIZES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.threads)))
        return 0

    rows, summary = [], {}
    for size in args.sizes:
        ours = run_child("ours", size, args.threads)
        rows.append(ours)
        entry = {"ours": ours}
        if size != "msmt17":
            base = run_child("transreid", size, args.threads)
            rows.append(base)
            entry["transreid"] = base
            entry["time_ratio"] = ours["seconds"] / base["seconds"]
            entry["rss_ratio"] = ours["peak_rss_mb"] / base["peak_rss_mb"]
            entry["abs_diff_mAP"] = abs(ours["mAP"] - base["mAP"])
            entry["abs_diff_rank1"] = abs(ours["rank1"] - base["rank1"])
        summary[size] = entry

    print(f"{'size':8} {'impl':10} {'seconds':>9} {'peak RSS MB':>12} {'eval extra MB':>14} {'distmat MB':>11} "
          f"{'mAP':>8} {'R1':>7}")
    for r in rows:
        print(f"{r['size']:8} {r['impl']:10} {r['seconds']:9.2f} {r['peak_rss_mb']:12.0f} {r['extra_rss_mb']:14.0f} "
              f"{r['distmat_mb']:11.0f} {r['mAP']:8.4f} {r['rank1']:7.4f}")
    for size, e in summary.items():
        if "time_ratio" in e:
            print(f"{size}: time ours/baseline = {e['time_ratio']:.3f} (target <= 0.1), "
                  f"peak RSS ours/baseline = {e['rss_ratio']:.2f}, |dmAP| = {e['abs_diff_mAP']:.2e}")
    write_results(Path(__file__).with_name("eval.json"), summary, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
