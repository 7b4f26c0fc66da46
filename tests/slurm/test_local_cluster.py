"""The harness itself: a real Slurm with accounting, and a stop that leaves nothing of its own behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from slurm.local_cluster import LocalSlurm, alive, leftover_pids
from tests.slurm.helpers import wait_for


def test_batch_job_runs_and_is_accounted(slurm, tmp_path):
    out = tmp_path / "out.txt"
    proc = slurm.run("sbatch", "--parsable", "-o", str(out), "--wrap", "echo $SLURM_JOB_PARTITION $SLURM_JOB_NODELIST")
    job_id = proc.stdout.strip().split(";")[0]
    state = wait_for("sacct COMPLETED", lambda: "COMPLETED" in slurm.run(
        "sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State").stdout, timeout=60)
    assert state
    assert out.read_text().split() == ["debug", "localhost"]


def test_impossible_job_is_rejected_at_submit(slurm):
    proc = slurm.run("sbatch", "--nodes=2", "--wrap", "true", check=False)
    assert proc.returncode != 0 and "Node count specification invalid" in proc.stderr


def test_stop_kills_only_its_own_leftovers(slurm_available, tmp_path):
    """A job step whose slurmd died is still found (by SLURM_CONF) and killed; a bystander lives."""
    bystander = subprocess.Popen(["sleep", "300"], env={**os.environ, "SLURM_CONF": "/elsewhere/slurm.conf"})
    cluster = LocalSlurm(tmp_path / "c", accounting=False, gpus=0)
    try:
        cluster.start()
        job = cluster.run("sbatch", "--parsable", "-o", str(tmp_path / "job.out"), "--wrap",
                          "srun sleep 300").stdout.strip()
        wait_for("job running", lambda: cluster.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() == "RUNNING")
        wait_for("job step processes", lambda: len(leftover_pids(cluster.root)) > len(cluster.pids))
        os.kill(cluster.pids["slurmd"], signal.SIGKILL)  # the crash that orphans job steps
        time.sleep(0.5)
        orphans = [p for p in leftover_pids(cluster.root) if p not in cluster.pids.values()]
        assert orphans, "expected job processes to outlive slurmd"
    finally:
        cluster.stop()
    assert leftover_pids(cluster.root) == []
    assert not any(alive(p) for p in orphans)
    assert alive(bystander.pid)
    bystander.kill()
    bystander.wait()
