"""Cluster profiles: what a job asks of the scheduler, from `configs/cluster/NAME.yaml`.

A profile is a typed dataclass read with the project's one config merge (unknown keys and wrong
types are errors naming the key). `slurm_parameters` turns it into submitit's SlurmExecutor
parameters; the same dict renders the `--dry-run` script and the real submission, so what is printed
is what is submitted.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from personvit.config.core import ConfigError, load_config

PROFILE_DIR = Path(__file__).resolve().parent.parent / "configs" / "cluster"


@dataclass
class ClusterProfile:
    """One cluster (or the local machine) and the shape of the jobs sent to it.

    Attributes:
        executor: `slurm` (sbatch through submitit) or `local` (submitit's local executor, no Slurm).
        nodes: nodes per job.
        tasks_per_node: processes per node (one per GPU on GPU clusters).
        gpus_per_node: GPUs requested per node (0 on CPU clusters).
        cpus_per_task: CPU cores per process (data loading workers + 1).
        mem_gb: memory per node in GB (None = the partition's default).
        timeout_min: time limit of one job; longer runs continue through requeues.
        partition, account, qos, constraint, exclude: the usual sbatch placeholders.
        signal_delay_s: how long before the kill Slurm sends USR2 (the checkpoint must fit in it).
        max_requeues: restarts allowed (preemptions and time limits together) before the job fails.
        array_parallelism: default limit of concurrently running array tasks (sweeps, packing).
        max_nodes, max_gpus_per_node: what the cluster can give; larger requests fail before sbatch.
        runs_root: where run folders go (relative paths: to the submission directory).
        snapshot_code: copy the source tree per submission, so a requeued job runs the code it
            started with even if the checkout moved on.
        setup: shell lines run in the sbatch script before the job (module loads, venv activation).
        check_partition: ask `sinfo` whether the partition exists before submitting.
        use_hold: submit held and release once the run folder exists (Slurm cannot create the
            folder of its own log files; a fast scheduler would start the job first).
    """

    executor: Literal["slurm", "local"] = "slurm"
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    signal_delay_s: int = 120
    max_requeues: int = 3
    array_parallelism: int = 16
    max_nodes: int = 1
    max_gpus_per_node: int = 0
    runs_root: str = "runs"
    snapshot_code: bool = False
    setup: list[str] = field(default_factory=list)
    check_partition: bool = False
    use_hold: bool = True

    def __post_init__(self) -> None:
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min", "array_parallelism", "max_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cluster profile: '{name}' must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_node", "max_gpus_per_node", "signal_delay_s", "max_requeues"):
            if getattr(self, name) < 0:
                raise ConfigError(f"cluster profile: '{name}' must be >= 0, got {getattr(self, name)}")
        if self.executor == "local" and self.nodes != 1:
            raise ConfigError("cluster profile: the local executor runs on one node ('nodes' must be 1)")

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    def check_request(self) -> None:
        """Fail before submission on what the profile says the cluster cannot give."""
        if self.nodes > self.max_nodes:
            raise ConfigError(f"cluster profile: 'nodes'={self.nodes} exceeds this cluster's max_nodes={self.max_nodes}")
        if self.gpus_per_node > self.max_gpus_per_node:
            raise ConfigError(f"cluster profile: 'gpus_per_node'={self.gpus_per_node} exceeds this cluster's "
                              f"max_gpus_per_node={self.max_gpus_per_node}")
        if self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
            raise ConfigError(f"cluster profile: one task per GPU expected, got tasks_per_node={self.tasks_per_node} "
                              f"with gpus_per_node={self.gpus_per_node}")
        if self.signal_delay_s >= self.timeout_min * 60:
            raise ConfigError(f"cluster profile: 'signal_delay_s'={self.signal_delay_s} is not shorter than the "
                              f"time limit ({self.timeout_min} min)")


def profile_path(name_or_path: str) -> Path:
    """`a100_8x8` -> configs/cluster/a100_8x8.yaml; a path to a YAML file is used as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return p
    path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(q.stem for q in PROFILE_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown cluster profile '{name_or_path}' (known: {', '.join(known)})")
    return path


def load_profile(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> ClusterProfile:
    """Read a profile and apply `key=value` overrides (given without their `cluster.` prefix).

    Args:
        name_or_path: a profile name in configs/cluster/ or a YAML path.
        overrides: e.g. `["partition=gpu", "nodes=2"]`.
    """
    try:
        return load_config(ClusterProfile, profile_path(name_or_path), overrides)
    except ConfigError as e:
        raise ConfigError(f"cluster profile {name_or_path}: {e}") from None


def slurm_parameters(profile: ClusterProfile, job_name: str, setup: list[str] = ()) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for this profile (the keys of `_make_sbatch_string`)."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "time": profile.timeout_min,
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": profile.array_parallelism,
        "stderr_to_stdout": False,
    }
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.mem_gb is not None:
        mem = profile.mem_gb
        params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    lines = list(profile.setup) + list(setup)
    if lines:
        params["setup"] = lines
    if profile.use_hold:
        params["additional_parameters"] = {"hold": True}
    return params


def check_partition(profile: ClusterProfile) -> None:
    """Fail before submission when `sinfo` says the profile's partition does not exist."""
    if not (profile.check_partition and profile.partition and shutil.which("sinfo")):
        return
    proc = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return  # cannot check: sbatch will say
    known = sorted(set(proc.stdout.split()))
    if profile.partition not in known:
        raise ConfigError(f"cluster profile: partition '{profile.partition}' does not exist on this cluster "
                          f"(sinfo lists: {', '.join(known) or 'none'})")
