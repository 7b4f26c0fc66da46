"""The harness itself: a real Slurm with accounting, a stop that leaves nothing of its own behind, and
nodes in network namespaces that keep to themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from slurm.local_cluster import LocalSlurm, SlurmUnavailable, alive, leftover_pids
from slurm.local_cluster.__main__ import main as local_cluster_cli
from tests.slurm.helpers import unavailable, wait_for


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


def _start_or_skip(cluster: LocalSlurm) -> LocalSlurm:
    try:
        return cluster.start()
    except SlurmUnavailable as e:
        unavailable(str(e))


def _mounts_of(path: Path) -> list[int]:
    """PIDs whose mount namespace still shows a bind mount of `path`."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f" {path} " in (entry / "mountinfo").read_text():
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def test_two_netns_nodes_then_down_removes_everything(slurm_available, tmp_path):
    hosts_before = Path("/etc/hosts").read_text()
    cluster = _start_or_skip(LocalSlurm(tmp_path / "c", accounting=False, gpus=2, nodes=2))
    net = cluster.network
    try:
        out = cluster.run("srun", "-N2", "--ntasks-per-node=1", "--gpus-per-node=2", "sh", "-c",
                          'echo "$(hostname) $CUDA_VISIBLE_DEVICES $(getent hosts "$(hostname)")"').stdout
        assert sorted(" ".join(line.split()) for line in out.splitlines()) == \
            ["node01 0,1 10.77.0.11 node01", "node02 0,1 10.77.0.12 node02"]
        assert _mounts_of(net.hosts_file), "the daemons should see the cluster's hosts file"
        # The machine's own namespace holds nothing of the cluster: no address, no interface, /etc untouched.
        root_ns = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        assert "10.77.0." not in root_ns and "v-node" not in root_ns
        assert Path("/etc/hosts").read_text() == hosts_before
    except BaseException:
        cluster.stop()
        raise
    assert local_cluster_cli(["down", "--dir", str(cluster.root)]) == 0  # from its state file, by PID
    assert net.existing_namespaces() == []
    assert not any(alive(p) for p in cluster.pids.values()) and leftover_pids(cluster.root) == []
    assert _mounts_of(net.hosts_file) == []
    assert cluster.spool.parent == cluster.root or not cluster.spool.exists()  # a short spool made in /tmp


def test_parallel_two_node_clusters(slurm_available, tmp_path):
    a = _start_or_skip(LocalSlurm(tmp_path / "a", accounting=False, gpus=0, nodes=2))
    try:
        b = _start_or_skip(LocalSlurm(tmp_path / "b", accounting=False, gpus=0, nodes=2))
        try:
            assert not set(a.network.existing_namespaces()) & set(b.network.existing_namespaces())
            assert a.first_job_id != b.first_job_id  # submitit caches job states by id, process-wide
            a.stop()
            job = b.run("sbatch", "--parsable", "-N2", "-o", str(tmp_path / "b.out"), "--wrap",
                        "srun hostname").stdout.strip()
            wait_for("the job on b", lambda: not b.run("squeue", "-h", "-j", job).stdout.strip())
            assert sorted((tmp_path / "b.out").read_text().split()) == ["node01", "node02"]
        finally:
            b.stop()
    finally:
        a.stop()
    assert a.network.existing_namespaces() == [] == b.network.existing_namespaces()
