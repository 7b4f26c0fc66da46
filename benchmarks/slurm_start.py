"""Benchmark: start-up time of the local Slurm (slurm/local_cluster) with 1 node and with N nodes.

Each repetition starts a fresh cluster with accounting (mariadb + slurmdbd, as in the tests), times
`start()` until every node is idle, and stops it. 1 node: 127.0.0.1 in the machine's namespace;
more: one network namespace per node. Needs root and the Slurm packages (`make slurm-deps`);
prints why otherwise. No baseline ratio: these are the harness's own costs for the test suite.

    python benchmarks/slurm_start.py [--nodes 1 2] [--reps 3] [--no-accounting]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import write_results  # noqa: E402

from slurm.local_cluster import LocalSlurm, SlurmUnavailable, missing_requirements  # noqa: E402


def time_start(nodes: int, accounting: bool) -> tuple[float, float]:
    """(seconds to idle, seconds to stop) of one fresh cluster."""
    with tempfile.TemporaryDirectory(prefix="pvbench-") as root:
        cluster = LocalSlurm(Path(root) / "c", accounting=accounting, nodes=nodes)
        t0 = time.perf_counter()
        cluster.start()
        started = time.perf_counter() - t0
        t0 = time.perf_counter()
        cluster.stop()
        return started, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-accounting", action="store_true")
    args = parser.parse_args()
    accounting = not args.no_accounting
    why = missing_requirements(accounting, max(args.nodes))
    if why:
        print(f"skipped: {why}")
        return 0
    summary = {}
    print("| nodes | accounting | start s (median) | min | max | stop s (median) | load avg 1 min |\n|---|---|---|---|---|---|---|")
    for n in args.nodes:
        runs = []
        try:
            for _ in range(args.reps):
                runs.append(time_start(n, accounting))
        except SlurmUnavailable as e:
            print(f"| {n} | {accounting} | skipped: {e} |")
            continue
        starts, stops = [r[0] for r in runs], [r[1] for r in runs]
        load = os.getloadavg()[0]
        print(f"| {n} | {accounting} | {statistics.median(starts):.2f} | {min(starts):.2f} | {max(starts):.2f} "
              f"| {statistics.median(stops):.2f} | {load:.1f} |")
        summary[f"nodes={n},accounting={accounting}"] = {"start_s": starts, "stop_s": stops, "load_avg_1min": load}
    write_results(Path(__file__).with_suffix(".json"), summary, threads=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
