"""Slurm launchers on submitit: `personvit-submit` and the local Slurm (1 node, or N simulated) for tests.

    submit.py         the `personvit-submit` command (pretrain, finetune, sweep, pack, status, collect)
    profiles.py       cluster profiles from configs/cluster/*.yaml -> submitit / sbatch parameters
    launch.py         executor, sbatch rendering (dry run == real script), held submit + release, snapshots
    jobs.py           callables run inside the job: TrainJob (preemption -> collective save -> requeue),
                      CommandJob (shard-tools array tasks)
    restarts.py       <run dir>/restarts.jsonl: starts, stops, requeues, ends and why
    status.py         job state (squeue / sacct / run log), restarts, latest checkpoint, last metrics
    sweep.py          checkpoints x datasets as one job array; results.md / results.csv
    pack.py           `shard-tools pack` as a job array plus an afterok merge job
    local_cluster/    slurmctld + slurmd + slurmdbd/mariadb in a temp folder: on 127.0.0.1, or N nodes
                      in one network namespace each (netns.py); config.py, processes.py

Preemption, end to end: Slurm sends USR2 `signal_delay_s` before the kill; personvit.preemption's
handler (installed in front of submitit's) sets a flag; trainers all-reduce it every step, save a
checkpoint together and raise `Preempted`; TrainJob then lets submitit's handler requeue the job
(`scontrol requeue`), and the restarted job resumes from the run folder's `latest` checkpoint.

Public API: `load_profile`, `TrainJob` / `CommandJob`; the local Slurm is `slurm.local_cluster`'s.
"""

from __future__ import annotations

from personvit.lazy_exports import lazy_getattr

# Public name -> the module that owns it, imported on first use (personvit.lazy_exports).
_EXPORTS = {
    "CommandJob": "slurm.jobs",
    "TrainJob": "slurm.jobs",
    "load_profile": "slurm.profiles",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
