"""A real Slurm in a temporary folder, for tests, the demo and trials: one node on 127.0.0.1, or N
nodes in one network namespace each.

    with LocalSlurm() as cluster:                  # tests, the demo
        subprocess.run(["sbatch", ...], env=cluster.env)
    with LocalSlurm(nodes=2) as cluster:           # node[01-02]: clients through cluster.env's PATH
        ...

    python -m slurm.local_cluster up [--nodes N]   # users: prints the `export` lines
    python -m slurm.local_cluster down

cluster.py: the daemons and their lifecycle; config.py: slurm.conf / slurmdbd.conf / gres.conf as
pure functions; netns.py: the simulated network; processes.py: finding and ending our processes.
Stopping kills only what this harness started, by PID: the daemons, then any process whose
environment names this cluster's `slurm.conf` (job steps outlive a dead slurmd); then it deletes
the cluster's namespaces. Facts behind each setting: ../shared/notes/slurm-local.md and
../shared/notes/slurm-multinode.md.
"""

from slurm.local_cluster.cluster import LocalSlurm, SlurmUnavailable, missing_requirements
from slurm.local_cluster.config import CLUSTER_NAME
from slurm.local_cluster.processes import MARKER_ENV, alive, leftover_pids

__all__ = ["CLUSTER_NAME", "MARKER_ENV", "LocalSlurm", "SlurmUnavailable", "alive", "leftover_pids",
           "missing_requirements"]
