"""`personvit pretrain CONFIG [key=value ...]`: PersonViT (DINO + MIM) pretraining with exact resume.

One process per device (torchrun / srun), or one CPU process. Per step: the loader's uint8 batch
becomes normalised views on the device, the teacher sees the 2 global views, the student all views
with the global ones masked, `DINOMIMLoss` compares them, AdamW steps with the scheduled lr / weight
decay, and the teacher follows the student by EMA.

Exact resume rests on four things: every random draw of the data and of drop path derives from
(seed, epoch, position) (the loader's contract, models/drop_path.py); torch's global generator is
reseeded per (step, rank) at the start of every step for anything else; schedules are arrays
indexed by the global step; and a checkpoint holds everything else that evolves (weights,
optimizer, scaler, loss centres, loader position, the global batch layout). A rerun of the same
command finds `latest` in `run.dir` and continues; the run ends bitwise equal to an uninterrupted one.

Elastic resume: the global batch layout is the first start's (data/batch_layout.py). A rerun on
another world size with `--allow-change world_size` shares the same global batch among its ranks,
with gradient accumulation where a rank's share exceeds `data.batch_size_per_rank`; every step sees
the same samples with the same draws, so the run matches the uninterrupted one up to the order of
floating-point reductions.
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
from personvit.checkpoint import CheckpointManager
from personvit.config.core import load_config
from personvit.config.pretrain import PretrainConfig
from personvit.data.batch_layout import LayoutError
from personvit.data.device_augment import device_views
from personvit.data.pretrain_loader import CorruptDataError, PretrainLoader, fresh_layout
from personvit.data.shards import ShardError, read_manifest
from personvit.distributed import DistInfo, init_distributed, is_dist, shutdown
from personvit.engine.errors import NonFiniteLossError
from personvit.engine.grad_sync import FlatGradReducer
from personvit.engine.knn_monitor import KnnMonitor
from personvit.engine.loop import Checkpointer, Position, StepOutput, TrainLoop
from personvit.engine.optim import apply_schedule, cancel_last_layer_grads, clip_grad_per_tensor_
from personvit.engine.pretrain_state import LayoutPart, LoaderPosition, SampleKeyLog, TorchRng
from personvit.engine.schedules import PretrainSchedules
from personvit.engine.ssl_meta_arch import MicroBatch, PersonViTSSL
from personvit.fingerprint import is_allowed
from personvit.models.drop_path import sample_drop_uniforms
from personvit.precision import autocast_settings
from personvit.rng import seed_step
from personvit.run_folder import open_run_folder
from personvit.runlog import MetricsLogger, get_logger

__all__ = ["NonFiniteLossError", "main", "run"]

log = get_logger(__name__)


@dataclass
class _Training:
    """What a step mutates, hence what a checkpoint holds (plus the loader position)."""

    ssl: PersonViTSSL  # student, teacher, loss (with its centres)
    grad_reducer: FlatGradReducer | None  # averages the student's gradients over ranks (world size > 1)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    layout: LayoutPart
    loader_position: LoaderPosition
    shards: list  # the split's shards, read once at start-up for the layout and the loader

    def register(self, ckpt: Checkpointer) -> None:
        """Register the checkpointed parts; `layout` first, so another layout is refused before any load."""
        ckpt.register("layout", self.layout)
        ckpt.register("student", self.ssl.student)
        ckpt.register("teacher", self.ssl.teacher)
        ckpt.register("optimizer", self.optimizer)
        ckpt.register("scaler", self.scaler)
        ckpt.register("loss", self.ssl.loss_fn)
        ckpt.register("loader", self.loader_position)
        ckpt.register("rng", TorchRng())


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
            return _train(cfg, dist_info, folder.path, allow_change)
    finally:
        if own_group:
            shutdown()


def _build(cfg: PretrainConfig, dist_info: DistInfo, allow_change: Sequence[str], pos: Position) -> _Training:
    world, device = dist_info.world_size, dist_info.device
    shards = read_manifest(cfg.data.shards, cfg.data.split)
    fresh = fresh_layout(cfg.data, sum(s.num_samples for s in shards), world)
    elastic = any(is_allowed(k, allow_change) for k in ("world_size", "data.batch_size_per_rank"))
    ssl = PersonViTSSL.from_config(cfg, world).to(device)
    # Not DDP: its bucket layout differs between the first step after a start and later ones, which
    # breaks exact resume at world size > 2 (personvit/engine/grad_sync.py says why and what was measured).
    grad_reducer = FlatGradReducer(ssl.student.parameters()) if world > 1 else None
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_settings(cfg.train.precision, device)[1])
    # lr and weight decay are set every step by `apply_schedule`.
    optimizer = torch.optim.AdamW(ssl.param_groups(), lr=0.0, betas=tuple(cfg.optim.betas), weight_decay=0.0)
    return _Training(ssl, grad_reducer, optimizer, scaler, LayoutPart(fresh, elastic), LoaderPosition(pos), shards)


def _step(
    t: _Training, micro_batches: list[MicroBatch], epoch: int, momentum: float, cfg: PretrainConfig,
    autocast, on_non_finite,
) -> dict[str, float]:
    """Zero the gradients, forward/backward over the micro-batches (`PersonViTSSL`), clip, step, EMA.

    Returns:
        The rank-averaged terms of `PersonViTSSL.forward_backward`.
    """
    t.optimizer.zero_grad(set_to_none=True)
    terms = t.ssl.forward_backward(
        micro_batches, epoch, scale=t.scaler.scale, autocast=autocast, on_non_finite=on_non_finite
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


def _train(cfg: PretrainConfig, dist_info: DistInfo, run_dir: Path, allow_change: Sequence[str]) -> dict[str, Any]:
    rank, world, is_main = dist_info.rank, dist_info.world_size, dist_info.is_main
    preemption.install_handlers()
    pos = Position()
    t = _build(cfg, dist_info, allow_change, pos)
    ckpt = Checkpointer(CheckpointManager.from_config(cfg.checkpoint, run_dir, is_main))
    t.register(ckpt)
    resumed = ckpt.load_latest() if cfg.checkpoint.resume else None
    if resumed is not None:
        pos.step = resumed[1]
        log.info("resumed from %s: step %d, epoch %d, batch %d", resumed[0], pos.step, pos.epoch, pos.batch)
    elif cfg.model.init:
        t.ssl.init_backbone(cfg.model.init)
    # Built after the checkpoint: an elastic resume takes the run's layout from it.
    loader = PretrainLoader(cfg.data, cfg.run.seed, rank, world, t.layout.layout, t.shards)
    t.loader_position.attach(loader)
    if is_main and loader.share.micro_batches > 1:
        log.info("each rank runs %d micro-batches of %d per step (gradient accumulation)",
                 loader.share.micro_batches, loader.share.micro_size)
    metrics = MetricsLogger(
        run_dir / "metrics.jsonl", is_main, run_dir / "tb" if cfg.run.tensorboard else None
    )
    step = _PretrainStep(cfg, t, loader, ckpt, dist_info, SampleKeyLog(run_dir, rank, cfg.data.log_sample_keys))
    t.ssl.student.train()
    niter = loader.batches_per_epoch
    loop = TrainLoop(
        "pretrain", cfg.train.epochs, lambda _: niter, lambda e, b: step.window.timed(loader.iter_steps(e, b)),
        step, ckpt, metrics, cfg.checkpoint.every_steps, cfg.run.log_every_steps, cfg.run.progress_every_s,
        is_main,
    )  # fmt: skip
    try:
        loop.run(pos)
    finally:
        step.key_log.close()
    final = ckpt.manager.latest()
    if is_main:
        log.info("pretraining done: %d steps, final checkpoint %s", pos.step, final)
    return {
        "run_dir": str(run_dir),
        "step": pos.step,
        "epoch": pos.epoch,
        "checkpoint": str(final) if final else None,
        "loss": step.last_loss,
    }


class _PretrainStep:
    """The loop's step function: schedules, the step's micro-batches on the device, `_step`, metrics.

    Args:
        cfg: the run's config.
        t: the training state.
        loader: the run's loader (its layout gives steps per epoch and the global batch).
        ckpt: named in the non-finite error (last checkpoint with finite weights).
        dist_info: rank and device.
        key_log: the sample-key log (`data.log_sample_keys`).
    """

    def __init__(
        self, cfg: PretrainConfig, t: _Training, loader: PretrainLoader, ckpt: Checkpointer, dist_info: DistInfo,
        key_log: SampleKeyLog,
    ) -> None:  # fmt: skip
        self.cfg, self.t, self.loader, self.ckpt, self.key_log = cfg, t, loader, ckpt, key_log
        self.rank, self.device = dist_info.rank, dist_info.device
        layout = loader.layout
        self.niter, self.global_batch = layout.batches_per_epoch, layout.global_batch
        self.total_steps = cfg.train.epochs * self.niter
        self.sched = PretrainSchedules.from_config(cfg.optim, cfg.train.epochs, self.niter, layout.global_batch)
        amp_dtype = autocast_settings(cfg.train.precision, self.device)[0]
        self.autocast = (
            torch.autocast(self.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        )
        self.monitor = KnnMonitor(
            cfg.monitor, cfg.data.global_size, cfg.train.epochs, self.device, amp_dtype, dist_info.is_main
        )
        self.window = _Window()
        self.n_views = 2 + cfg.data.n_local
        self.slots = t.ssl.student.backbone.drop_path_slots if cfg.model.drop_path_rate > 0 else 0
        self.last_loss = float("nan")

    def micro_batch(self, batch, epoch: int) -> MicroBatch:
        """A loader micro-batch as device tensors, with its samples' drop-path uniforms."""
        masks = batch.masks.to(self.device, non_blocking=True)
        uniforms = None
        if self.slots:
            uniforms = sample_drop_uniforms(
                self.cfg.run.seed, epoch, batch.positions, self.n_views, self.slots, self.device
            )
        return MicroBatch(device_views(batch, self.device), masks, uniforms)

    def __call__(self, at: Position, batches) -> StepOutput:
        cfg, t = self.cfg, self.t
        index, epoch = batches[0].index, at.epoch
        if at.step != epoch * self.niter + index or index != at.batch:  # guards the resume arithmetic
            raise RuntimeError(f"step {at.step} does not match epoch {epoch} batch {index}")

        def non_finite(**terms: float) -> None:
            bad = ", ".join(f"{k}={v}" for k, v in terms.items() if not math.isfinite(v))
            raise NonFiniteLossError(
                f"non-finite loss at step {at.step} (epoch {epoch}, batch {index}): {bad}; stopped before the "
                f"update; last checkpoint with finite weights: {self.ckpt.manager.latest_finite()}"
            )

        lr, wd, momentum = self.sched.at(at.step)
        apply_schedule(t.optimizer, lr, wd)
        # Anything drawing from torch's global generator this step becomes a function of (step,
        # rank), not of the run's history (drop path draws per sample instead: see the docstring).
        seed_step(cfg.run.seed, at.step, self.rank)
        for batch in batches:
            self.key_log.write(at.step, batch.first_index, batch.keys)
        micro = [self.micro_batch(b, epoch) for b in batches]
        terms = _step(t, micro, epoch, momentum, cfg, self.autocast, non_finite)
        self.window.steps += 1
        # Before the epoch's checkpoint: a kill in between re-runs the epoch's tail, figures included.
        knn = self.monitor.at_epoch_end(t.ssl.teacher.backbone, epoch) if index == self.niter - 1 else {}
        temps = t.ssl.loss_fn.temperatures(epoch)
        logged = {
            "loss": terms["loss"], "dino": terms["dino"], "mim": terms["mim"], "lr": lr, "wd": wd,
            "momentum": momentum, "teacher_temp": temps[0], "teacher_patch_temp": temps[1],
            "teacher_entropy": terms["teacher_entropy"], "teacher_mean_entropy": terms["teacher_mean_entropy"],
        }  # fmt: skip
        self.last_loss = terms["loss"]
        log_now = at.step + 1 == self.total_steps or bool(knn)
        if log_now or (at.step + 1) % cfg.run.log_every_steps == 0:  # the window is reset only when logged
            logged.update(self.window.rates(self.global_batch), corrupt_skipped=self.loader.corrupt_skipped, **knn)
        progress = {"loss": terms["loss"], "lr": lr, **{k: v for k, v in knn.items() if "map" in k}}
        return StepOutput(logged, progress, log_now)


class _Window:
    """Throughput and data-wait fraction since the last logged step."""

    def __init__(self) -> None:
        self.t0, self.waited, self.steps = time.perf_counter(), 0.0, 0

    def timed(self, batches):
        """`batches`, adding the time spent waiting for each to the window."""
        batches = iter(batches)
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            self.waited += time.perf_counter() - t
            if batch is None:
                return
            yield batch

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
    except (NonFiniteLossError, CorruptDataError, ShardError, LayoutError) as e:
        print(f"personvit pretrain: error: {e}", file=sys.stderr)
        return 1
    return 0
