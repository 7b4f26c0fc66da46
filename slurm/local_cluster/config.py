"""The configuration files of a local cluster, as pure functions of its layout.

Facts behind each setting: ../shared/notes/slurm-local.md (single node) and
../shared/notes/slurm-multinode.md (one namespace per node).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CLUSTER_NAME = "ci"
FAKE_GPU_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


@dataclass(frozen=True)
class Layout:
    """Where every daemon of one cluster lives and listens.

    Attributes:
        root: the cluster folder (config, state, logs, database).
        spool: slurmd's spool folder (holds the job steps' Unix sockets: its path must stay short).
        controller: (name, address) of slurmctld's host; slurmdbd and mariadb live there too.
        nodes: (name, address) per compute node.
        ports: slurmctld, slurmd, and with accounting slurmdbd and mariadb.
        cpus, mem_mb: what each node advertises.
        gpus: fake GPUs per node (gres on /dev/null, /dev/zero, ...); 0 = no gres.
        accounting: slurmdbd + mariadb.
        bind_loopback: add NoInAddrAny (only when `hostname` resolves to 127.0.0.1 on a 127.0.0.1 cluster).
        first_job_id: where job ids start (a fresh state folder starts over from it).
    """

    root: Path
    spool: Path
    controller: tuple[str, str]
    nodes: tuple[tuple[str, str], ...]
    ports: dict[str, int]
    cpus: int
    mem_mb: int
    gpus: int = 0
    accounting: bool = True
    bind_loopback: bool = False
    first_job_id: int = 1

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a cluster needs at least one node")
        if not 0 <= self.gpus <= len(FAKE_GPU_DEVICES):
            raise ValueError(f"fake GPUs per node must be in 0..{len(FAKE_GPU_DEVICES)}, got {self.gpus}")

    @property
    def single_node(self) -> bool:
        return len(self.nodes) == 1


def slurm_conf(lay: Layout) -> str:
    """slurm.conf: one partition `debug` over every node."""
    r, p = lay.root, lay.ports
    host, addr = lay.controller
    # One slurmd: the historical file names. Several: `%n` (the node name) keeps their files apart.
    node_files = ("slurmd.pid", "log/slurmd.log", "") if lay.single_node else \
        ("slurmd-%n.pid", "log/slurmd-%n.log", "%n")
    lines = [
        f"ClusterName={CLUSTER_NAME}",
        f"SlurmctldHost={host}({addr})",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/none", "CredType=cred/none",
        "AuthInfo=cred_expire=5",  # requeued jobs restart after ~6 s instead of ~2 min
        f"SlurmctldPort={p['slurmctld']}", f"SlurmdPort={p['slurmd']}",
        f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={lay.spool / node_files[2]}",
        f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / node_files[0]}",
        f"SlurmctldLogFile={r / 'log/slurmctld.log'}", f"SlurmdLogFile={r / node_files[1]}",
        "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobCompType=jobcomp/none",
        "SchedulerType=sched/backfill", "SchedulerParameters=bf_interval=1,sched_interval=1",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "EnforcePartLimits=ALL",  # an impossible job is rejected at submit instead of pending forever
        "ReturnToService=2", "MpiDefault=none",
        "KillWait=2",  # submitit ignores SIGTERM: a killed job trains on until SIGKILL; keep that short
        "MinJobAge=300",
        f"FirstJobId={lay.first_job_id}",
    ]
    if lay.bind_loopback:
        lines.append("CommunicationParameters=NoCtldInAddrAny,NoInAddrAny")
    if lay.accounting:
        lines += ["AccountingStorageType=accounting_storage/slurmdbd", f"AccountingStorageHost={host}",
                  f"AccountingStoragePort={p['slurmdbd']}", "JobAcctGatherType=jobacct_gather/linux",
                  "JobAcctGatherFrequency=30"]
    else:
        lines += ["AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none"]
    gres = ""
    if lay.gpus:
        lines.append("GresTypes=gpu")
        gres = f" Gres=gpu:{lay.gpus}"
    for name, node_addr in lay.nodes:
        lines.append(f"NodeName={name} NodeAddr={node_addr} NodeHostname={name} CPUs={lay.cpus} "
                     f"RealMemory={lay.mem_mb}{gres} State=UNKNOWN")
    lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def gres_conf(gpus: int) -> str:
    """gres.conf with no NodeName: every node maps the same character devices as its fake GPUs."""
    return "".join(f"Name=gpu File={d}\n" for d in FAKE_GPU_DEVICES[:gpus])


def slurmdbd_conf(lay: Layout) -> str:
    """slurmdbd.conf: slurmdbd on the controller's address, mariadb on the controller's loopback."""
    host, addr = lay.controller
    return "\n".join([
        "AuthType=auth/none", f"DbdHost={host}", f"DbdAddr={addr}", f"DbdPort={lay.ports['slurmdbd']}",
        "SlurmUser=root", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
        f"StoragePort={lay.ports['mariadb']}", "StorageUser=root", "StorageLoc=slurm_acct_db",
        f"PidFile={lay.root / 'slurmdbd.pid'}", f"LogFile={lay.root / 'log/slurmdbd.log'}",
        "CommunicationParameters=NoInAddrAny",  # else it binds 0.0.0.0:6819
    ]) + "\n"
