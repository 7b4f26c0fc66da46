"""A tiny stand-in trainer for launcher tests: a deterministic "model" advanced step by step.

It follows the trainers' contract: resume from `latest`, check `stop_requested()` every step (a
collective across ranks), save a checkpoint and raise `Preempted` when asked, save every
`every_steps` and at the end. Its final checkpoint depends only on the number of steps, so a run
interrupted any number of times must end bitwise equal to an uninterrupted one.

    main([CONFIG, "steps=40", "sleep_s=0.1", "every_steps=5", "run.dir=/path"])
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from personvit import preemption
from personvit.checkpoint import CheckpointManager
from personvit.config.core import deep_merge, parse_overrides, read_yaml
from personvit.distributed import all_reduce_sum_, get_rank, get_world_size, init_distributed
from personvit.runlog import MetricsLogger


def _advance(state: torch.Tensor, step: int) -> torch.Tensor:
    # Float arithmetic whose result depends on every previous step (order matters).
    g = torch.Generator().manual_seed(1000 + step)
    return state * 0.99 + torch.randn(state.shape, generator=g, dtype=state.dtype) * 0.1


def main(argv: list[str]) -> int:
    cfg = deep_merge(read_yaml(argv[0]), parse_overrides(argv[1:]))
    torch.set_num_threads(1)
    init_distributed()
    rank, world = get_rank(), get_world_size()
    run_dir = Path(cfg["run"]["dir"])
    ckpts = CheckpointManager(run_dir / "checkpoints", keep_last=2, is_main=rank == 0)
    metrics = MetricsLogger(run_dir / "metrics.jsonl", enabled=rank == 0)
    steps, every, sleep_s = int(cfg["steps"]), int(cfg.get("every_steps", 0)), float(cfg.get("sleep_s", 0.0))
    preemption.install_handlers()
    resumed = ckpts.load_latest()
    if resumed is not None:
        state, step = resumed["model"], resumed["step"]
        metrics.truncate_after(step)
    else:
        state, step = torch.zeros(16, dtype=torch.float64), 0
    while step < steps:
        state = _advance(state, step)
        contrib = torch.tensor([float(rank + 1)], dtype=torch.float64)
        all_reduce_sum_(contrib)  # a real collective every step, like DDP's gradient all-reduce
        step += 1
        metrics.log(step=step, value=float(state.sum()), world=world, ranks_sum=float(contrib))
        time.sleep(sleep_s)
        if preemption.stop_requested():
            ckpts.save({"model": state, "world": world}, step=step, epoch=0)
            raise preemption.Preempted(step, preemption.stop_reason())
        if every and step % every == 0:
            ckpts.save({"model": state, "world": world}, step=step, epoch=0)
    ckpts.save({"model": state, "world": world}, step=step, epoch=1, end_of_epoch=True)
    return 0
