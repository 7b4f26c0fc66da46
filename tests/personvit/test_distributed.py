"""Distributed setup from Slurm-style and torchrun-style variables, with a real gloo group."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from personvit.distributed import (
    env_layout,
    first_host,
    first_host_by_hand,
    init_distributed,
    port_from_job_id,
    scontrol_hostnames,
    submitit_hostnames,
)

# (node list, its hosts as Slurm expands them); the first host is the rendezvous.
NODE_LISTS = [
    ("gpu[003-006,010],cpu1", ["gpu003", "gpu004", "gpu005", "gpu006", "gpu010", "cpu1"]),
    ("a-[01-02]b", ["a-01b", "a-02b"]),
    ("node7", ["node7"]),
    ("localhost", ["localhost"]),
]


@pytest.fixture
def slurm_conf(tmp_path, monkeypatch):
    """A minimal slurm.conf, enough for scontrol to expand host lists (no daemon is contacted)."""
    if shutil.which("scontrol") is None:
        pytest.skip("scontrol not installed")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=t\nSlurmctldHost=localhost\nNodeName=localhost CPUs=1\n"
                    "PartitionName=p Nodes=localhost Default=YES\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))


@pytest.fixture
def without_scontrol(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


@pytest.mark.parametrize("nodelist, hosts", NODE_LISTS)
def test_scontrol_path(slurm_conf, nodelist, hosts):
    got = scontrol_hostnames(nodelist)
    if nodelist == "a-[01-02]b" and got is None:
        pass  # Slurm 22.05 rejects a suffix after the bracket ("Invalid hostlist"): the fallback answers
    else:
        assert got == hosts
    assert first_host(nodelist) == hosts[0]


def test_scontrol_answers_first(slurm_conf, monkeypatch):
    # A two-dimensional list our hand parser gets wrong: with submitit hidden, only scontrol can be right.
    monkeypatch.setitem(sys.modules, "submitit.slurm.slurm", None)
    assert submitit_hostnames("a[1-2]b[3-4]") is None
    assert first_host_by_hand("a[1-2]b[3-4]") != "a1b3"
    assert first_host("a[1-2]b[3-4]") == "a1b3"


@pytest.mark.parametrize("nodelist, hosts", NODE_LISTS)
def test_fallbacks_without_scontrol(without_scontrol, monkeypatch, nodelist, hosts):
    assert scontrol_hostnames(nodelist) is None
    assert submitit_hostnames(nodelist) == hosts
    assert first_host(nodelist) == hosts[0]
    monkeypatch.setitem(sys.modules, "submitit.slurm.slurm", None)  # submitit missing: our own parser
    assert submitit_hostnames(nodelist) is None
    assert first_host_by_hand(nodelist) == first_host(nodelist) == hosts[0]


def test_unparseable_node_list_names_it(without_scontrol):
    with pytest.raises(ValueError, match=r"\[gpu"):
        first_host("[gpu")


def test_port_is_stable_and_job_specific():
    assert port_from_job_id("123") == port_from_job_id(123)
    assert port_from_job_id("123") != port_from_job_id("124")
    assert 20000 <= port_from_job_id("987654321") < 40000


def test_layout_precedence():
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234",
                "SLURM_PROCID": "0", "SLURM_NTASKS": "64"}
    assert env_layout(torchrun) == (3, 8, 1, "h", 1234)
    slurm = {"SLURM_PROCID": "9", "SLURM_NTASKS": "64", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[002-009]",
             "SLURM_JOB_ID": "4242"}
    assert env_layout(slurm) == (9, 64, 1, "gpu002", port_from_job_id("4242"))
    assert env_layout({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
    assert env_layout({}) is None


def test_single_process_creates_no_group(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    import torch.distributed as dist

    info = init_distributed()
    assert info.world_size == 1 and info.backend is None and not dist.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_group_from_slurm_variables(tmp_path):
    port = _free_port()
    job_id = str(port - 20000) if 20000 <= port < 40000 else None
    script = textwrap.dedent(
        """
        import torch
        from personvit.distributed import init_distributed, all_reduce_sum_, all_reduce_max_, shutdown
        info = init_distributed()
        t = torch.tensor([float(info.rank + 1)])
        all_reduce_sum_(t)
        f = torch.tensor([1.0 if info.rank == 1 else 0.0])
        all_reduce_max_(f)
        print(info.rank, info.world_size, info.backend, t.item(), f.item(), flush=True)
        shutdown()
        """
    )
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
        env.update(SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID=str(rank),
                   SLURM_JOB_NODELIST="localhost", OMP_NUM_THREADS="1")
        if job_id is not None:
            env["SLURM_JOB_ID"] = job_id  # port derived from the job id
        else:
            env["SLURM_JOB_ID"], env["MASTER_PORT"] = "1", str(port)
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    rows = sorted(o.split() for o, _ in outs)
    assert rows == [["0", "2", "gloo", "3.0", "1.0"], ["1", "2", "gloo", "3.0", "1.0"]]
