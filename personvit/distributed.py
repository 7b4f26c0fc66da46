"""Distributed setup in one place: torchrun or Slurm/submitit variables -> one process group.

Order of precedence: torchrun's `RANK`/`WORLD_SIZE` (also what submitit's helpers export), then
Slurm's `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID` with the first host of the job's node list
(expanded by `scontrol show hostnames`) as rendezvous and a port derived from the job id (so two
jobs sharing a node do not collide). NCCL on GPUs, gloo on CPU. World size 1 creates no process group at all: single-process code paths stay free
of collectives.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from personvit.runlog import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when no process group exists (world size 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def scontrol_hostnames(nodelist: str, timeout_s: float = 10.0) -> list[str] | None:
    """Hosts of a node list as Slurm itself expands it (`scontrol show hostnames`).

    Args:
        nodelist: e.g. `gpu[003-006,010],cpu1`.
        timeout_s: give up after this long (scontrol reads the Slurm config, which may hang on DNS).
    Returns:
        The host names, or None when scontrol is missing, fails or rejects the list (Slurm 22.05
        rejects suffixes after a bracket, e.g. `a-[01-02]b`).
    """
    exe = shutil.which("scontrol")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "show", "hostnames", nodelist], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    hosts = done.stdout.split()
    return hosts if done.returncode == 0 and hosts else None


def submitit_hostnames(nodelist: str) -> list[str] | None:
    """Hosts of a node list by submitit's parser (private API of submitit 1.5.x), None if unavailable."""
    try:
        from submitit.slurm.slurm import _parse_node_list
    except ImportError:
        return None
    try:
        return _parse_node_list(nodelist) or None
    except Exception:  # submitit raises its own SlurmParseException; any failure means "ask the next parser"
        return None


def first_host_by_hand(nodelist: str) -> str:
    """First host of a node list by our own minimal parser: the last fallback of `first_host`.

    Args:
        nodelist: e.g. `gpu[003-006,010],cpu1` -> `gpu003`, `a-[01-02]b` -> `a-01b`.
    """
    m = re.match(r"^([^,\[]+)(?:\[([^\]]+)\]([^,\[]*))?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot parse Slurm node list {nodelist!r}")
    prefix, ranges, suffix = m.group(1), m.group(2), m.group(3) or ""
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list (the rendezvous host), e.g. `gpu[003-006,010],cpu1` -> `gpu003`.

    Slurm's own expansion first (`scontrol show hostnames`, present wherever a job runs), then
    submitit's parser, then ours: node-list syntax has corners (suffixes, nested ranges, padding)
    that only Slurm is the authority on.

    Args:
        nodelist: the value of `SLURM_JOB_NODELIST` / `SLURM_STEP_NODELIST`.
    """
    nodelist = nodelist.strip()
    hosts = scontrol_hostnames(nodelist) or submitit_hostnames(nodelist)
    return hosts[0] if hosts else first_host_by_hand(nodelist)


def port_from_job_id(job_id: str | int, base: int = 20000, span: int = 20000) -> int:
    """A rendezvous port that is stable across a job's restarts and differs between jobs."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    return base + int(digits) % span


def env_layout(env: dict[str, str] | None = None) -> tuple[int, int, int, str, int] | None:
    """(rank, world_size, local_rank, master_addr, master_port) from the environment, or None if single."""
    env = dict(os.environ if env is None else env)
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", "0"))
        addr = env.get("MASTER_ADDR", "127.0.0.1")
        port = int(env.get("MASTER_PORT", "29500"))
        return rank, world, local, addr, port
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", "0"))
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        addr = env.get("MASTER_ADDR") or first_host(nodes)
        port = int(env.get("MASTER_PORT") or port_from_job_id(env.get("SLURM_JOB_ID", "0")))
        return rank, world, local, addr, port
    return None


def init_distributed(backend: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Initialise the process group if the environment describes more than one process.

    Args:
        backend: `auto` (NCCL with CUDA, gloo otherwise), `nccl` or `gloo`.
        timeout_s: collective timeout.
    Returns:
        This process's DistInfo; idempotent when a group already exists.
    """
    layout = env_layout()
    cuda = torch.cuda.is_available()
    if layout is None or layout[1] == 1:
        local = layout[2] if layout else 0
        device = torch.device("cuda", local % max(torch.cuda.device_count(), 1)) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        return DistInfo(0, 1, local, device, None)
    rank, world, local, addr, port = layout
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    device = torch.device("cuda", local % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method=f"tcp://{addr}:{port}", rank=rank,
                                world_size=world, timeout=_dt.timedelta(seconds=timeout_s))
        if rank == 0:
            log.info("process group: backend=%s world_size=%d rendezvous=%s:%d", backend, world, addr, port)
    return DistInfo(rank, world, local, device, backend)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity on a single process)."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max_(t: torch.Tensor) -> torch.Tensor:
    """In-place max over ranks: used to agree on flags (any rank preempted -> all stop)."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def shutdown() -> None:
    """Destroy the process group if there is one."""
    if is_dist():
        dist.destroy_process_group()
