"""`personvit finetune CONFIG [key=value ...]`: BoT fine-tuning with exact resume (SPEC.md section 7).

One process per GPU (or one CPU process), DDP when there are several. Every source of randomness is
keyed: the PK batches by (seed, epoch), each sample's augmentation by (seed, epoch, position), drop
path by (seed, step, rank), initialisation by the seed. The checkpoint holds the model, the SGD
momenta, the grad scaler and the loader position (epoch, batch), so a run SIGKILLed anywhere and
started again with the same command ends bitwise equal to one that was never interrupted.
The learning rate is a pure function of the epoch and is set at each epoch start.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from personvit import cli_args, preemption
from personvit.checkpoint import CheckpointManager
from personvit.cli import PREEMPTED_EXIT_CODE
from personvit.config.core import ConfigError, load_config
from personvit.config.finetune import FinetuneConfig, FinetuneTrainConfig
from personvit.data.reid import ReIDTrainDataset, read_reid_split, relabel
from personvit.data.reid_transforms import TrainTransform
from personvit.data.samplers import KeyBatchSampler, PKSampler
from personvit.data.shards import ShardError
from personvit.data.worker_quiet import quiet_worker_interrupts
from personvit.distributed import DistInfo, all_reduce_sum_, barrier, init_distributed, is_dist
from personvit.engine.errors import NonFiniteLossError
from personvit.engine.evaluate import (
    EvaluationError,
    evaluate_model,
    init_checkpoint,
)
from personvit.engine.grad_sync import FlatGradReducer
from personvit.engine.loop import Checkpointer, Position, StepOutput, TrainLoop
from personvit.engine.optim import no_weight_decay_names
from personvit.engine.schedules import cosine_schedule
from personvit.losses.triplet import batch_hard_triplet_loss
from personvit.models.build import build_finetune_model, model_arch
from personvit.models.loading import load_backbone
from personvit.models.reid import ReIDModel
from personvit.precision import autocast_settings
from personvit.rng import Stream, derive_seed, seed_step
from personvit.run_folder import open_run_folder
from personvit.runlog import MetricsLogger, get_logger

log = get_logger(__name__)

# The exit status of a preempted run, set in one place: `personvit` maps `Preempted` to it.
EXIT_PREEMPTED = PREEMPTED_EXIT_CODE


def epoch_lrs(lr: float, train: FinetuneTrainConfig) -> np.ndarray:
    """The learning rate of every epoch: linear warmup from `warmup_factor * lr`, cosine to `min_lr_factor * lr`.

    Per-epoch values of the shared `cosine_schedule` (iBOT semantics: the warmup reaches `lr` on its
    last epoch and the cosine runs over the remaining epochs). The authors' timm `CosineLRScheduler`
    starts its cosine clock at epoch 0 instead; the two differ by at most a few percent of `lr`.

    Args:
        lr: peak learning rate (already scaled to the batch size).
        train: epochs, warmup and floor.
    """
    warmup = min(train.warmup_epochs, train.epochs)
    return cosine_schedule(lr, train.min_lr_factor * lr, train.epochs, 1, warmup, train.warmup_factor * lr)


def build_optimizer(model: ReIDModel, train: FinetuneTrainConfig, lr: float) -> torch.optim.SGD:
    """SGD with momentum; biases get `bias_lr_factor` x lr and their own weight decay.

    Group 0 holds weights, group 1 biases; each group's `lr_factor` scales the epoch's lr. The biases
    are the biases among `no_weight_decay_names` (pretraining's rule): BoT decays the 1-D norm scales
    at the full weight decay, so they stay in group 0.
    """
    skip = no_weight_decay_names(model)
    weights, biases = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (biases if name in skip and name.endswith("bias") else weights).append(p)
    groups = [
        {"params": weights, "weight_decay": train.weight_decay, "lr_factor": 1.0},
        {"params": biases, "weight_decay": train.weight_decay_bias, "lr_factor": train.bias_lr_factor},
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=train.momentum)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_factor"]


class Finetuner:
    """The fine-tuning state (model, optimiser, scaler, position) and its step / save / resume logic.

    Args:
        cfg: the resolved config.
        dist_info: this process's place in the job.
        run_dir: the run folder.
    """

    def __init__(self, cfg: FinetuneConfig, dist_info: DistInfo, run_dir: Path):
        self.cfg, self.dist, self.run_dir = cfg, dist_info, run_dir
        t, d = cfg.train, cfg.data
        self.device = dist_info.device
        train_split = read_reid_split(d.shards, d.train_split)
        labels, self.pids = relabel(train_split.pids)
        try:
            self.sampler = PKSampler.from_config(labels, t, cfg.run.seed, dist_info.rank, dist_info.world_size)
        except ValueError as e:  # too few identities, or num_ids not divisible by the world size
            raise ConfigError(f"train.num_ids={t.num_ids}, train.num_instances={t.num_instances}: {e}") from None
        transform = TrainTransform.from_config(d, cfg.run.seed)
        self.dataset = ReIDTrainDataset(train_split, labels, transform)
        log.info("train split: %d images, %d identities, %d batches/epoch of %d (%d per rank)", len(train_split),
                 len(self.pids), self.sampler.epoch_batches(0).shape[0], self.sampler.batch_size,
                 self.sampler.rank_batch_size)

        torch.manual_seed(derive_seed(cfg.run.seed, Stream.INIT))  # same init on every rank and rerun
        m = cfg.model
        self.model = build_finetune_model(m, d.img_size, len(self.pids)).to(self.device)
        if m.init:
            load_backbone(self.model.backbone, init_checkpoint(m.init), which="teacher", strict=m.init_strict)
        self.lr = t.base_lr * self.sampler.batch_size / t.lr_ref_batch
        self.lrs = epoch_lrs(self.lr, t)
        self.optimizer = build_optimizer(self.model, t, self.lr)
        self.amp_dtype, use_scaler = autocast_settings(t.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        # Not DDP: exact resume at world size > 2 needs a fixed reduction layout (engine/grad_sync.py).
        # Without DDP's buffer broadcast the BNNeck running stats of ranks > 0 drift apart; only rank
        # 0's are saved and evaluated, and those evolve as under DDP (its broadcast comes from rank 0).
        self.grad_reducer = FlatGradReducer(self.model.parameters()) if dist_info.world_size > 1 else None
        self.ckpt = CheckpointManager.from_config(cfg.checkpoint, run_dir, is_main=dist_info.is_main)
        self.pos = Position()
        self.checkpointer = Checkpointer(self.ckpt)
        # The flat layout evaluation and export read: run facts at the top, checked before any load.
        self.checkpointer.register(None, _RunFacts(self))
        self.checkpointer.register("model", self.model)
        self.checkpointer.register("optimizer", self.optimizer)
        self.checkpointer.register("scaler", self.scaler)

    @property
    def step(self) -> int:
        return self.pos.step

    def state(self) -> dict[str, Any]:
        """The checkpoint payload of the current position (every registered part)."""
        return self.checkpointer.state()

    def resume(self) -> bool:
        """Load the run folder's latest checkpoint, if any; True when resumed."""
        resumed = self.checkpointer.load_latest() if self.cfg.checkpoint.resume else None
        if resumed is None:
            return False
        self.pos.step = resumed[1]
        log.info("resumed from %s: step %d, epoch %d, batch %d", resumed[0], self.pos.step, self.pos.epoch,
                 self.pos.batch)
        return True

    # ------------------------------------------------------------------ training
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One SGD step on a PK batch at `self.pos` (steps done before it); returns the logged terms."""
        t = self.cfg.train
        seed_step(self.cfg.run.seed, self.step, self.dist.rank)  # drop path draws
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            feat, logits = self.model(images)
        id_loss = F.cross_entropy(logits.float(), labels, label_smoothing=t.label_smoothing)
        tri_loss = batch_hard_triplet_loss(feat, labels)
        loss = t.id_loss_weight * id_loss + t.triplet_loss_weight * tri_loss
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if is_dist():
            # Every rank must stop at the same step: one rank raising alone would leave the others
            # waiting in the gradient all-reduce until the process-group timeout.
            all_reduce_sum_(bad)
        if bad.item() > 0:
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step} (epoch {self.pos.epoch}; this rank: id {id_loss.item():.4g}, "
                f"triplet {tri_loss.item():.4g}); stopped before the update; last checkpoint with finite "
                f"weights: {self.ckpt.latest_finite()}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_reducer is not None:
            self.grad_reducer.all_reduce_mean_()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss.item(), "id_loss": id_loss.item(), "triplet_loss": tri_loss.item(), "acc": acc.item()}

    def loader(self, epoch: int, start_batch: int) -> torch.utils.data.DataLoader:
        workers = min(self.cfg.data.num_workers, os.cpu_count() or 1)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=KeyBatchSampler(self.sampler, epoch, start_batch),
                                           num_workers=workers, pin_memory=self.device.type == "cuda",
                                           worker_init_fn=_one_thread, persistent_workers=False)

    def fit(self) -> None:
        """Train until `train.epochs`, checkpointing periodically, at epoch ends and on preemption."""
        cfg, t = self.cfg, self.cfg.train
        metrics = MetricsLogger(self.run_dir / "metrics.jsonl", enabled=self.dist.is_main,
                                tensorboard_dir=self.run_dir / "tb" if cfg.run.tensorboard else None)
        per_epoch = [self.sampler.epoch_batches(e).shape[0] for e in range(t.epochs)]
        lr = [0.0]

        def on_epoch_start(epoch: int) -> None:
            lr[0] = float(self.lrs[epoch])
            set_lr(self.optimizer, lr[0])

        def step_fn(_: Position, batch) -> StepOutput:
            images, labels, _ids = batch
            out = self.train_step(images, labels)
            return StepOutput({"lr": lr[0], **out}, {"loss": out["loss"], "acc": out["acc"]})

        self.model.train()
        TrainLoop("finetune", t.epochs, per_epoch.__getitem__, self.loader, step_fn, self.checkpointer, metrics,
                  cfg.checkpoint.every_steps, cfg.run.log_every_steps, cfg.run.progress_every_s, self.dist.is_main,
                  on_epoch_start).run(self.pos)


class _RunFacts:
    """Fine-tuning's top-level checkpoint entries: the loader position and what a resume must match."""

    def __init__(self, tuner: Finetuner) -> None:
        self.tuner = tuner

    def state_dict(self) -> dict[str, Any]:
        tu = self.tuner
        return {
            "next_epoch": tu.pos.epoch,
            "next_batch": tu.pos.batch,
            "num_classes": len(tu.pids),
            "pids": [int(p) for p in tu.pids],
            "world_size": tu.dist.world_size,
            "model_arch": model_arch(tu.cfg.model, tu.cfg.data.img_size),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        tu = self.tuner
        if state.get("world_size") != tu.dist.world_size:
            raise ValueError(f"saved with world size {state.get('world_size')}, this job has "
                             f"{tu.dist.world_size}; the PK batches are split per rank, so resume needs the same")
        if state.get("num_classes") != len(tu.pids):
            raise ValueError(f"{state.get('num_classes')} identities, the train split has {len(tu.pids)}")
        tu.pos.epoch, tu.pos.batch = int(state["next_epoch"]), int(state["next_batch"])


def _one_thread(_: int) -> None:
    # Loader workers decode and augment; letting each spawn a full OpenMP pool oversubscribes the CPU.
    torch.set_num_threads(1)
    quiet_worker_interrupts()  # the trainer reports Ctrl-C, in one line


def run(cfg: FinetuneConfig, allow_change: Sequence[str] = ()) -> dict[str, Any]:
    """Fine-tune (resuming when the run folder has a checkpoint), then evaluate on rank 0.

    Args:
        cfg: the resolved config.
        allow_change: keys a resume may change besides the default ones (personvit/fingerprint.py).

    Returns:
        The `results.json` content on rank 0, an empty dict on other ranks.
    Raises:
        Preempted: after saving, when a stop was requested (Slurm's warning signal).
        RunLockedError, ResumeContractError: the run folder is in use, or was started with another
            config (nothing written).
        WriteFailedError, Interrupted: a full disk, Ctrl-C (the message names the last checkpoint).
    """
    dist_info = init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    d = dist_info
    with open_run_folder(cfg, "finetune", d.rank, d.world_size, d.device, allow_change) as folder:
        return _run(cfg, dist_info, folder.path)


def _run(cfg: FinetuneConfig, dist_info: DistInfo, run_dir: Path) -> dict[str, Any]:
    preemption.install_handlers()
    tuner = Finetuner(cfg, dist_info, run_dir)
    tuner.resume()
    tuner.fit()
    results: dict[str, Any] = {}
    if dist_info.is_main:
        results = evaluate_model(tuner.model, cfg.data, cfg.eval, run_dir, tuner.device, tuner.amp_dtype,
                                 extra={"weights": str(tuner.ckpt.latest()), "step": tuner.step})
    barrier()
    return results


def main(argv: Sequence[str]) -> int:
    """Entry of `personvit finetune`; `Preempted` propagates (the CLI exits 75, Slurm jobs requeue)."""
    args = cli_args.parse("finetune", argv)
    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    try:
        run(cfg, args.allow_change or ())
    except (ShardError, EvaluationError, NonFiniteLossError) as e:
        raise SystemExit(f"personvit finetune: error: {e}") from None
    return 0
