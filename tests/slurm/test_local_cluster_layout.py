"""The local cluster's configuration and simulated network as data (no daemons), and a namespace
set-up that fails part way."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from slurm.local_cluster.config import Layout, gres_conf, slurm_conf, slurmdbd_conf
from slurm.local_cluster.netns import NETNS_DIR, ClusterNetwork, NamespaceError, node_list, node_names
from tests.slurm.helpers import unavailable

PORTS = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819, "mariadb": 3306}


def _two_nodes(tmp_path: Path) -> tuple[ClusterNetwork, Layout]:
    net = ClusterNetwork("abc123", tuple(node_names(2)), tmp_path / "hosts")
    lay = Layout(tmp_path, tmp_path / "spool", ("login", net.address("login")),
                 tuple((n, net.address(n)) for n in net.nodes), PORTS, cpus=2, mem_mb=4096, gpus=2)
    return net, lay


def test_node_names_and_slurm_node_list():
    assert node_names(2) == ["node01", "node02"] and node_list(2) == "node[01-02]" and node_list(1) == "node01"
    with pytest.raises(ValueError, match="nodes must be in 1..99"):
        node_names(100)


def test_two_node_config_gives_each_node_its_address_and_files(tmp_path):
    net, lay = _two_nodes(tmp_path)
    conf = slurm_conf(lay).splitlines()
    assert "SlurmctldHost=login(10.77.0.1)" in conf and "AccountingStorageHost=login" in conf
    nodes = [line for line in conf if line.startswith("NodeName=")]
    assert [line.split()[:3] for line in nodes] == [
        ["NodeName=node01", "NodeAddr=10.77.0.11", "NodeHostname=node01"],
        ["NodeName=node02", "NodeAddr=10.77.0.12", "NodeHostname=node02"]]
    assert all("Gres=gpu:2" in line for line in nodes)
    # One slurmd per node: `%n` keeps their spools, PID files and logs apart.
    assert f"SlurmdSpoolDir={tmp_path / 'spool' / '%n'}" in conf and f"SlurmdLogFile={tmp_path / 'log/slurmd-%n.log'}" in conf
    assert not any(line.startswith("CommunicationParameters") for line in conf) and "FirstJobId=1" in conf
    assert "DbdAddr=10.77.0.1" in slurmdbd_conf(lay) and gres_conf(2) == "Name=gpu File=/dev/null\nName=gpu File=/dev/zero\n"
    assert net.hosts_text().splitlines() == ["127.0.0.1\tlocalhost", "10.77.0.1\tlogin", "10.77.0.11\tnode01",
                                             "10.77.0.12\tnode02"]


def test_layout_rejects_impossible_requests(tmp_path):
    with pytest.raises(ValueError, match="fake GPUs per node must be in 0..5"):
        Layout(tmp_path, tmp_path, ("localhost", "127.0.0.1"), (("localhost", "127.0.0.1"),), PORTS, 2, 1024, gpus=6)


def test_client_wrapper_enters_the_login_namespace_only_from_outside(tmp_path):
    net, _ = _two_nodes(tmp_path)
    script = net.client_wrapper("/usr/bin/sbatch")
    assert f"--net={NETNS_DIR / 'pvslurm-abc123-login'}" in script and "ip netns exec" not in script
    for host in ("login", "node01", "node02"):
        assert str(NETNS_DIR / f"pvslurm-abc123-{host}") in script.splitlines()[3]  # "already inside" checks


def test_failed_namespace_setup_names_the_command_and_removes_only_its_own(tmp_path):
    if os.geteuid() != 0:
        unavailable("not root: network namespaces cannot be made")
    net = ClusterNetwork.new(tmp_path, 2)
    taken = net.namespace("node02")  # someone else's namespace with the name ours would get
    if subprocess.run(["ip", "netns", "add", taken], capture_output=True).returncode != 0:
        unavailable("`ip netns add` fails here")
    try:
        with pytest.raises(NamespaceError, match=f"`ip netns add {taken}` failed"):
            net.create()
        assert net.existing_namespaces() == [taken]  # ours (login, node01) removed; theirs kept
    finally:
        subprocess.run(["ip", "netns", "delete", taken], capture_output=True)
