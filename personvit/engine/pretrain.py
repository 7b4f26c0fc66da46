"""`personvit pretrain CONFIG [key=value ...]`: PersonViT (DINO + MIM) pretraining with exact resume.

One process per device (torchrun / srun), or one CPU process. Per step: the loader's uint8 batch
becomes normalised views on the device, the teacher sees the 2 global views, the student all views
with the global ones masked, `DINOMIMLoss` compares them, AdamW steps with the scheduled lr / weight
decay, and the teacher follows the student by EMA.

Exact resume rests on four things: every random draw of the data derives from (seed, epoch,
position) (the loader's contract); drop path is reseeded per (step, rank) before the student's
forward; schedules are arrays indexed by the global step; and a checkpoint holds everything else
that evolves (weights, optimizer, scaler, loss centres, loader position). A rerun of the same
command finds `latest` in `run.dir` and continues; the run ends bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from personvit import preemption
from personvit.checkpoint import CheckpointError, CheckpointManager
from personvit.config.core import load_config
from personvit.config.pretrain import PretrainConfig
from personvit.data.pretrain_loader import CorruptDataError, PretrainLoader
from personvit.data.shards import ShardError
from personvit.distributed import all_reduce_sum_, barrier, init_distributed, is_dist, shutdown
from personvit.engine.optim import apply_schedule, build_adamw, cancel_last_layer_grads, clip_grad_per_tensor_
from personvit.engine.schedules import pretrain_schedules
from personvit.engine.ssl_model import build_student_teacher, ema_update_, init_backbone
from personvit.losses import DINOMIMLoss
from personvit.rng import seed_step
from personvit.runlog import MetricsLogger, ProgressReporter, get_logger, resolve_run_dir, start_run

__all__ = ["NonFiniteLossError", "main", "run"]

log = get_logger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stops before the update, so the last checkpoint stays good."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `train.precision` on `device` (None = plain fp32)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _layout(cfg: PretrainConfig, world_size: int, batches_per_epoch: int) -> dict[str, int]:
    return {"world_size": world_size, "batch_size_per_rank": cfg.data.batch_size_per_rank,
            "batches_per_epoch": batches_per_epoch}


def _check_layout(saved: dict[str, int], current: dict[str, int], path: str) -> None:
    # Positions and schedules are indexed by (epoch, batch): another layout would silently change them.
    if saved != current:
        raise CheckpointError(f"{path}: written by a run with {saved}, this run has {current}; resume needs the same "
                              "world size and batch size (or a new run.dir)")


def run(cfg: PretrainConfig) -> dict[str, Any]:
    """Train (or resume) the run described by `cfg` to `train.epochs`.

    Args:
        cfg: resolved pretraining config.
    Returns:
        `{"run_dir", "step", "epoch", "checkpoint", "loss"}` of the finished run.
    Raises:
        Preempted: a stop was requested (signal); a checkpoint of this step was saved first.
        NonFiniteLossError: the loss became NaN/inf (no update, no checkpoint of that step).
    """
    own_group = not is_dist()
    dist_info = init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    try:
        return _train(cfg, dist_info)
    finally:
        if own_group:
            shutdown()


def _train(cfg: PretrainConfig, dist_info) -> dict[str, Any]:
    rank, world, device, is_main = dist_info.rank, dist_info.world_size, dist_info.device, dist_info.is_main
    preemption.install_handlers()
    run_dir = start_run(cfg, resolve_run_dir(cfg.run.dir, "pretrain"), "pretrain", is_main)
    seed = cfg.run.seed

    loader = PretrainLoader(cfg.data, seed, rank, world)
    niter = loader.batches_per_epoch
    if niter < 1:
        raise ShardError(f"{cfg.data.shards}: {loader.num_samples} samples give no full batch of "
                         f"{cfg.data.batch_size_per_rank} x {world} ranks")
    total_steps = cfg.train.epochs * niter
    o = cfg.optim
    peak_lr = o.scaled_lr(cfg.data.batch_size_per_rank * world)
    sched = pretrain_schedules(peak_lr, o.min_lr, o.warmup_epochs, o.weight_decay, o.weight_decay_end,
                               o.momentum_teacher, o.momentum_teacher_end, cfg.train.epochs, niter)

    student, teacher = build_student_teacher(cfg.model, cfg.data.global_size, seed)
    lc = cfg.loss
    loss_fn = DINOMIMLoss(cfg.model.head.out_dim, cfg.model.head.patch_out_dim, lc.student_temp, lc.teacher_temp,
                          lc.warmup_teacher_temp, lc.teacher_patch_temp, lc.warmup_teacher_patch_temp,
                          lc.warmup_teacher_temp_epochs, lc.center_momentum, lc.center_momentum2,
                          lc.lambda1, lc.lambda2)
    student.to(device), teacher.to(device), loss_fn.to(device)
    optimizer = build_adamw(student, tuple(o.betas))
    amp_dtype = autocast_dtype(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    ckpt = CheckpointManager(Path(run_dir) / "checkpoints", cfg.checkpoint.keep_last,
                             cfg.checkpoint.keep_every_epochs, is_main)
    layout = _layout(cfg, world, niter)
    state = ckpt.load_latest() if cfg.checkpoint.resume else None
    if state is not None:
        _check_layout(state["layout"], layout, state["_path"])
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        loss_fn.load_state_dict(state["loss"])
        torch.set_rng_state(state["rng"]["torch"])
        loader.corrupt_skipped = int(state["loader"]["corrupt_skipped"])
        step, epoch, start_batch = int(state["step"]), int(state["loader"]["epoch"]), int(state["loader"]["next_batch"])
        log.info("resumed from %s: step %d, epoch %d, batch %d", state["_path"], step, epoch, start_batch)
        del state
    else:
        step, epoch, start_batch = 0, 0, 0
        if cfg.model.init:
            init_backbone(student, teacher, cfg.model.init)

    model = student
    if world > 1:
        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    metrics = MetricsLogger(Path(run_dir) / "metrics.jsonl", is_main,
                            Path(run_dir) / "tb" if cfg.run.tensorboard else None)
    metrics.truncate_after(step)

    def save(end_of_epoch: bool) -> Path | None:
        nxt_epoch, nxt_batch = (epoch + 1, 0) if end_of_epoch else (epoch, batch.index + 1)
        payload = {
            "student": student.state_dict(), "teacher": teacher.state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "loss": loss_fn.state_dict(),
            "loader": {"epoch": nxt_epoch, "next_batch": nxt_batch, "corrupt_skipped": loader.corrupt_skipped},
            "rng": {"torch": torch.get_rng_state()}, "layout": layout,
        }
        return ckpt.save(payload, step, nxt_epoch if end_of_epoch else epoch, end_of_epoch=end_of_epoch)

    batch = None
    last = {"loss": float("nan")}
    window = {"t0": time.perf_counter(), "wait": 0.0, "steps": 0}
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())  # fmt: skip
    student.train()
    with ProgressReporter(total_steps, "pretrain", enabled=is_main, every_s=cfg.run.progress_every_s,
                          initial=step) as progress:
        while epoch < cfg.train.epochs:
            temps = loss_fn.temperatures(epoch)
            batches = loader.iter_epoch(epoch, start_batch)
            while True:
                t_wait = time.perf_counter()
                batch = next(batches, None)
                window["wait"] += time.perf_counter() - t_wait
                if batch is None:
                    break
                if step != epoch * niter + batch.index:  # guards the resume arithmetic
                    raise RuntimeError(f"step {step} does not match epoch {epoch} batch {batch.index}")
                lr, wd, momentum = sched.at(step)
                apply_schedule(optimizer, lr, wd)

                views = batch.views(device)
                masks = batch.masks.to(device, non_blocking=True)
                with autocast:
                    with torch.no_grad():
                        t_out = teacher(views[:2], patch_views=2)
                    seed_step(seed, step, rank)  # drop path: a function of (step, rank), not of history
                    s_out = model(views, masks=masks, patch_views=2)
                    out = loss_fn(s_out.cls, s_out.patch, t_out.cls, t_out.patch, masks, epoch)

                # One collective both for logging and for agreeing that the loss is finite on every rank.
                terms = all_reduce_sum_(torch.stack([out.total, out.dino, out.mim]).detach().float()) / world
                total, dino, mim = (float(v) for v in terms.cpu())
                if not all(map(_finite, (total, dino, mim))):
                    bad = ", ".join(f"{k}={v}" for k, v in (("dino", dino), ("mim", mim), ("total", total)) if not _finite(v))
                    raise NonFiniteLossError(f"non-finite loss at step {step} (epoch {epoch}, batch {batch.index}): "
                                             f"{bad}; stopped before the update, last good checkpoint: {ckpt.latest()}")

                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out.total).backward()
                if o.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    clip_grad_per_tensor_(student.parameters(), o.clip_grad)
                cancel_last_layer_grads(student, epoch, o.freeze_last_layer)
                scaler.step(optimizer)
                scaler.update()
                ema_update_(teacher, student, momentum)
                step += 1
                window["steps"] += 1
                last = {"loss": total, "dino": dino, "mim": mim}

                end_of_epoch = batch.index == niter - 1
                if step % cfg.run.log_every_steps == 0 or step == total_steps:
                    elapsed = max(time.perf_counter() - window["t0"], 1e-9)
                    metrics.log(step=step, epoch=epoch, loss=total, dino=dino, mim=mim, lr=lr, wd=wd,
                                momentum=momentum, teacher_temp=temps[0], teacher_patch_temp=temps[1],
                                images_per_s=window["steps"] * cfg.data.batch_size_per_rank * world / elapsed,
                                data_wait=window["wait"] / elapsed, corrupt_skipped=loader.corrupt_skipped)
                    window = {"t0": time.perf_counter(), "wait": 0.0, "steps": 0}
                progress.advance(1, epoch=epoch, loss=total, lr=lr)

                saved = False
                if end_of_epoch or (cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0):
                    save(end_of_epoch)
                    saved = True
                if preemption.stop_requested():
                    if not saved:
                        save(end_of_epoch)
                    barrier()
                    log.warning("stop requested (%s): checkpoint of step %d saved", preemption.stop_reason(), step)
                    raise preemption.Preempted(step, preemption.stop_reason())
            epoch, start_batch = epoch + 1, 0

    barrier()
    metrics.close()
    final = ckpt.latest()
    if is_main:
        log.info("pretraining done: %d steps, final checkpoint %s", step, final)
    return {"run_dir": str(run_dir), "step": step, "epoch": epoch, "checkpoint": str(final) if final else None,
            "loss": last["loss"]}


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def main(argv: list[str]) -> int:
    """`personvit pretrain CONFIG [key=value ...]`; returns the exit status.

    Args:
        argv: the config path and dotted overrides, e.g. `["configs/pretrain/tiny_cpu.yaml", "train.epochs=2"]`.
    """
    parser = argparse.ArgumentParser(
        prog="personvit pretrain",
        description="DINO+MIM pretraining of a PersonViT backbone; rerun the same command to resume.",
    )
    parser.add_argument("config", help="YAML recipe, e.g. configs/pretrain/vit_small_luperson.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.shards=/data/lup")
    args = parser.parse_args(argv)
    cfg = load_config(PretrainConfig, args.config, args.overrides)
    try:
        run(cfg)
    except (NonFiniteLossError, CorruptDataError, ShardError) as e:
        print(f"personvit pretrain: error: {e}", file=sys.stderr)
        return 1
    return 0
