"""`python -m slurm.local_cluster {up,down,status}`: a local cluster for trying the launcher by hand."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from slurm.local_cluster.cluster import STATE_FILE, LocalSlurm, SlurmUnavailable
from slurm.local_cluster.processes import alive

STATE_POINTER = Path(tempfile.gettempdir()) / "personvit-local-slurm.json"  # the cluster `up` started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurm.local_cluster", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", help="cluster folder (up: default a new temp folder; down/status: default "
                                      "the cluster `up` started)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="nodes; more than 1 gives each its own network namespace (node01, node02, ..)")
    parser.add_argument("--gpus", type=int, default=2, help="fake GPUs per node (gres on /dev/null, ...)")
    parser.add_argument("--no-accounting", action="store_true", help="skip mariadb + slurmdbd")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error(f"--nodes must be >= 1, got {args.nodes}")
    if args.action == "up":
        if STATE_POINTER.exists():
            print(f"a local cluster is already up (see {STATE_POINTER}); `down` it first", file=sys.stderr)
            return 1
        cluster = LocalSlurm(args.dir, accounting=not args.no_accounting, nodes=args.nodes, gpus=args.gpus)
        t0 = time.monotonic()
        try:
            cluster.start()
        except SlurmUnavailable as e:
            print(f"local Slurm cannot start: {e}", file=sys.stderr)
            return 1
        STATE_POINTER.write_text(json.dumps({"root": str(cluster.root)}))
        print(f"local Slurm up in {cluster.root} ({', '.join(cluster.node_names)}; {time.monotonic() - t0:.1f} s)")
        print(f"export SLURM_CONF={cluster.conf}")
        if cluster.network:
            print(f"export PATH={cluster.bin_dir}:$PATH   # clients that run inside the cluster's namespaces")
        return 0
    root = args.dir or (json.loads(STATE_POINTER.read_text())["root"] if STATE_POINTER.exists() else None)
    if root is None or not (Path(root) / STATE_FILE).is_file():
        print("no local cluster is up" + (f" in {root}" if root else ""), file=sys.stderr)
        return 1 if args.action == "status" else 0
    cluster = LocalSlurm.attach(root)
    if args.action == "status":
        up = {k: alive(v) for k, v in cluster.pids.items()}
        print(f"{cluster.root}: " + ", ".join(f"{k} {'up' if a else 'DOWN'}" for k, a in up.items()))
        return 0 if up and all(up.values()) else 1
    cluster.stop()
    if STATE_POINTER.exists() and json.loads(STATE_POINTER.read_text())["root"] == str(cluster.root):
        STATE_POINTER.unlink()
    left = cluster.network.existing_namespaces() if cluster.network else []
    print(f"local Slurm in {cluster.root} stopped" + (f"; namespaces still there: {left}" if left else ""))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
