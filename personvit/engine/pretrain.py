"""`personvit pretrain CONFIG [key=value ...]`: PersonViT (DINO + MIM) pretraining with exact resume.

One process per device (torchrun / srun), or one CPU process. Per step: the loader's uint8 batch
becomes normalised views on the device, the teacher sees the 2 global views, the student all views
with the global ones masked, `DINOMIMLoss` compares them, AdamW steps with the scheduled lr / weight
decay, and the teacher follows the student by EMA.

Exact resume rests on four things: every random draw of the data derives from (seed, epoch,
position) (the loader's contract); torch's global generator (drop path) is reseeded per (step,
rank) at the start of every step; schedules are arrays indexed by the global step; and a checkpoint holds everything else
that evolves (weights, optimizer, scaler, loss centres, loader position). A rerun of the same
command finds `latest` in `run.dir` and continues; the run ends bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from personvit import cli_args, preemption
from personvit.checkpoint import CheckpointError, CheckpointManager
from personvit.config.core import load_config
from personvit.config.pretrain import PretrainConfig
from personvit.data.pretrain_loader import CorruptDataError, PretrainLoader
from personvit.data.shards import ShardError
from personvit.distributed import DistInfo, barrier, init_distributed, is_dist, shutdown
from personvit.engine.errors import NonFiniteLossError
from personvit.engine.grad_sync import FlatGradReducer
from personvit.engine.knn_monitor import KnnMonitor
from personvit.engine.optim import apply_schedule, cancel_last_layer_grads, clip_grad_per_tensor_
from personvit.engine.schedules import PretrainSchedules
from personvit.engine.ssl_meta_arch import PersonViTSSL
from personvit.rng import seed_step
from personvit.run_folder import open_run_folder, reporting_interrupts
from personvit.runlog import MetricsLogger, ProgressReporter, get_logger

__all__ = ["NonFiniteLossError", "main", "run"]

log = get_logger(__name__)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `train.precision` on `device` (None = plain fp32)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _layout(cfg: PretrainConfig, world_size: int, batches_per_epoch: int) -> dict[str, int]:
    return {
        "world_size": world_size,
        "batch_size_per_rank": cfg.data.batch_size_per_rank,
        "batches_per_epoch": batches_per_epoch,
    }


@dataclass
class _Training:
    """What a step mutates, hence what a checkpoint holds (plus the loader position)."""

    ssl: PersonViTSSL  # student, teacher, loss (with its centres)
    grad_reducer: FlatGradReducer | None  # averages the student's gradients over ranks (world size > 1)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: PretrainLoader
    layout: dict[str, int]

    def state(self, next_epoch: int, next_batch: int) -> dict[str, Any]:
        return {
            "student": self.ssl.student.state_dict(), "teacher": self.ssl.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "loss": self.ssl.loss_fn.state_dict(),
            "loader": {"epoch": next_epoch, "next_batch": next_batch, "corrupt_skipped": self.loader.corrupt_skipped},
            "rng": {"torch": torch.get_rng_state()}, "layout": self.layout,
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> tuple[int, int, int]:
        """Load a checkpoint's state; returns (step, epoch, next batch)."""
        if state["layout"] != self.layout:
            # Positions and schedules are indexed by (epoch, batch): another layout would change them.
            raise CheckpointError(
                f"{state['_path']}: written by a run with {state['layout']}, this run has "
                f"{self.layout}; resume needs the same world size and batch size (or a new run.dir)"
            )
        self.ssl.student.load_state_dict(state["student"])
        self.ssl.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.ssl.loss_fn.load_state_dict(state["loss"])
        torch.set_rng_state(state["rng"]["torch"])
        self.loader.corrupt_skipped = int(state["loader"]["corrupt_skipped"])
        return int(state["step"]), int(state["loader"]["epoch"]), int(state["loader"]["next_batch"])


def run(cfg: PretrainConfig, allow_change: Sequence[str] = ()) -> dict[str, Any]:
    """Train (or resume) the run described by `cfg` to `train.epochs`.

    Args:
        cfg: resolved pretraining config.
        allow_change: keys a resume may change besides the default ones (personvit/fingerprint.py).
    Returns:
        `{"run_dir", "step", "epoch", "checkpoint", "loss"}` of the finished run.
    Raises:
        Preempted: a stop was requested (signal); a checkpoint of this step was saved first.
        NonFiniteLossError: the loss became NaN/inf (no update, no checkpoint of that step).
        RunLockedError, ResumeContractError: the run folder is in use, or was started with another
            config (nothing written).
        WriteFailedError, Interrupted: a full disk, Ctrl-C (the message names the last checkpoint).
    """
    own_group = not is_dist()
    dist_info = init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    try:
        d = dist_info
        with open_run_folder(cfg, "pretrain", d.rank, d.world_size, d.device, allow_change) as folder:
            return _train(cfg, dist_info, folder.path)
    finally:
        if own_group:
            shutdown()


def _build(cfg: PretrainConfig, dist_info: DistInfo) -> _Training:
    rank, world, device = dist_info.rank, dist_info.world_size, dist_info.device
    loader = PretrainLoader(cfg.data, cfg.run.seed, rank, world)
    if loader.batches_per_epoch < 1:
        raise ShardError(
            f"{cfg.data.shards}: {loader.num_samples} samples give no full batch of "
            f"{cfg.data.batch_size_per_rank} x {world} ranks"
        )
    ssl = PersonViTSSL.from_config(cfg, world).to(device)
    # Not DDP: its bucket layout differs between the first step after a start and later ones, which
    # breaks exact resume at world size > 2 (personvit/engine/grad_sync.py says why and what was measured).
    grad_reducer = FlatGradReducer(ssl.student.parameters()) if world > 1 else None
    scaler = torch.amp.GradScaler(
        device.type, enabled=autocast_dtype(cfg.train.precision, device) is torch.float16
    )
    # lr and weight decay are set every step by `apply_schedule`.
    optimizer = torch.optim.AdamW(ssl.param_groups(), lr=0.0, betas=tuple(cfg.optim.betas), weight_decay=0.0)
    return _Training(
        ssl,
        grad_reducer,
        optimizer,
        scaler,
        loader,
        _layout(cfg, world, loader.batches_per_epoch),
    )


def _step(
    t: _Training, batch, views: list[torch.Tensor], epoch: int, momentum: float, cfg: PretrainConfig,
    autocast, on_non_finite,
) -> dict[str, float]:
    """Zero the gradients, forward/backward (`PersonViTSSL`), clip, step, EMA.

    Returns:
        The rank-averaged terms of `PersonViTSSL.forward_backward`.
    """
    masks = batch.masks.to(views[0].device, non_blocking=True)
    t.optimizer.zero_grad(set_to_none=True)
    terms = t.ssl.forward_backward(
        views, masks, epoch, scale=t.scaler.scale, autocast=autocast, on_non_finite=on_non_finite
    )
    if t.grad_reducer is not None:
        t.grad_reducer.all_reduce_mean_()
    student = t.ssl.student
    if cfg.optim.clip_grad > 0:
        t.scaler.unscale_(t.optimizer)
        clip_grad_per_tensor_(student.parameters(), cfg.optim.clip_grad)
    cancel_last_layer_grads(student, epoch, cfg.optim.freeze_last_layer)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.ssl.update_teacher(momentum)
    return terms


def _train(cfg: PretrainConfig, dist_info: DistInfo, run_dir: Path) -> dict[str, Any]:
    rank, world, device, is_main = dist_info.rank, dist_info.world_size, dist_info.device, dist_info.is_main
    preemption.install_handlers()
    t = _build(cfg, dist_info)
    niter = t.loader.batches_per_epoch
    total_steps = cfg.train.epochs * niter
    sched = PretrainSchedules.from_config(cfg.optim, cfg.train.epochs, niter, cfg.data.batch_size_per_rank * world)
    ckpt = CheckpointManager(
        run_dir / "checkpoints", cfg.checkpoint.keep_last, cfg.checkpoint.keep_every_epochs, is_main
    )
    state = ckpt.load_latest() if cfg.checkpoint.resume else None
    if state is not None:
        step, epoch, start_batch = t.restore(state)
        log.info("resumed from %s: step %d, epoch %d, batch %d", state["_path"], step, epoch, start_batch)
        del state
    else:
        step, epoch, start_batch = 0, 0, 0
        if cfg.model.init:
            t.ssl.init_backbone(cfg.model.init)
    metrics = MetricsLogger(
        run_dir / "metrics.jsonl", is_main, run_dir / "tb" if cfg.run.tensorboard else None
    )
    metrics.truncate_after(step)
    amp_dtype = autocast_dtype(cfg.train.precision, device)
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    monitor = KnnMonitor(cfg.monitor, cfg.data.global_size, cfg.train.epochs, device, amp_dtype, is_main)

    def non_finite(**terms: float) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in terms.items() if not math.isfinite(v))
        raise NonFiniteLossError(
            f"non-finite loss at step {step} (epoch {epoch}, batch {batch.index}): {bad}; "
            f"stopped before the update; last checkpoint with finite weights: {ckpt.latest_finite()}"
        )

    last_loss = float("nan")
    window = _Window()
    t.ssl.student.train()
    with reporting_interrupts(lambda: step, ckpt.latest), ProgressReporter(
        total_steps, "pretrain", enabled=is_main, every_s=cfg.run.progress_every_s, initial=step
    ) as progress:
        while epoch < cfg.train.epochs:
            temps = t.ssl.loss_fn.temperatures(epoch)
            batches = t.loader.iter_epoch(epoch, start_batch)
            while (batch := window.wait(batches)) is not None:
                if step != epoch * niter + batch.index:  # guards the resume arithmetic
                    raise RuntimeError(f"step {step} does not match epoch {epoch} batch {batch.index}")
                lr, wd, momentum = sched.at(step)
                apply_schedule(t.optimizer, lr, wd)
                # Drop path (and anything else drawing from torch's global generator this step) becomes
                # a function of (step, rank), not of the run's history: what makes resume exact.
                seed_step(cfg.run.seed, step, rank)
                views = batch.views(device)
                terms = _step(t, batch, views, epoch, momentum, cfg, autocast, non_finite)
                last_loss = terms["loss"]
                step += 1
                window.steps += 1
                end_of_epoch = batch.index == niter - 1
                # Before the epoch's checkpoint: a kill in between re-runs the epoch's tail, figures included.
                knn = monitor.at_epoch_end(t.ssl.teacher.backbone, epoch) if end_of_epoch else {}
                if step % cfg.run.log_every_steps == 0 or step == total_steps or knn:
                    metrics.log(
                        step=step,
                        epoch=epoch,
                        loss=last_loss,
                        dino=terms["dino"],
                        mim=terms["mim"],
                        lr=lr,
                        wd=wd,
                        momentum=momentum,
                        teacher_temp=temps[0],
                        teacher_patch_temp=temps[1],
                        teacher_entropy=terms["teacher_entropy"],
                        teacher_mean_entropy=terms["teacher_mean_entropy"],
                        **window.rates(cfg.data.batch_size_per_rank * world),
                        corrupt_skipped=t.loader.corrupt_skipped,
                        **knn,
                    )
                progress.advance(1, epoch=epoch, loss=last_loss, lr=lr, **{k: v for k, v in knn.items() if "map" in k})

                nxt = (epoch + 1, 0) if end_of_epoch else (epoch, batch.index + 1)
                periodic = cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0
                if end_of_epoch or periodic:
                    ckpt.save(t.state(*nxt), step, nxt[0], end_of_epoch=end_of_epoch)
                if preemption.stop_requested():
                    if not (end_of_epoch or periodic):
                        ckpt.save(t.state(*nxt), step, nxt[0], end_of_epoch=end_of_epoch)
                    barrier()
                    log.warning(
                        "stop requested (%s): checkpoint of step %d saved", preemption.stop_reason(), step
                    )
                    raise preemption.Preempted(step, preemption.stop_reason())
            epoch, start_batch = epoch + 1, 0

    barrier()
    metrics.close()
    final = ckpt.latest()
    if is_main:
        log.info("pretraining done: %d steps, final checkpoint %s", step, final)
    return {
        "run_dir": str(run_dir),
        "step": step,
        "epoch": epoch,
        "checkpoint": str(final) if final else None,
        "loss": last_loss,
    }


class _Window:
    """Throughput and data-wait fraction since the last logged step."""

    def __init__(self) -> None:
        self.t0, self.waited, self.steps = time.perf_counter(), 0.0, 0

    def wait(self, batches):
        t = time.perf_counter()
        batch = next(batches, None)
        self.waited += time.perf_counter() - t
        return batch

    def rates(self, images_per_step: int) -> dict[str, float]:
        """`images_per_s` and `data_wait` of the window, then start a new one."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        out = {"images_per_s": self.steps * images_per_step / elapsed, "data_wait": self.waited / elapsed}
        self.t0, self.waited, self.steps = time.perf_counter(), 0.0, 0
        return out


def main(argv: list[str]) -> int:
    """`personvit pretrain CONFIG [key=value ...]`; returns the exit status.

    Args:
        argv: the config path and dotted overrides, e.g. `["configs/pretrain/tiny_cpu.yaml", "train.epochs=2"]`.
    """
    args = cli_args.parse("pretrain", argv)
    cfg = load_config(PretrainConfig, args.config, args.overrides)
    try:
        run(cfg, args.allow_change or ())
    except (NonFiniteLossError, CorruptDataError, ShardError) as e:
        print(f"personvit pretrain: error: {e}", file=sys.stderr)
        return 1
    return 0
