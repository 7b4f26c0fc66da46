"""Schema of `personvit pretrain` (SPEC.md sections 1-6): the PersonViT / iBOT recipe as typed keys.

Defaults are the paper's ViT-S/16 recipe on LUPerson; `configs/pretrain/*.yaml` state only what
differs. Sections: `run`, `data` (the loader's, personvit/config/data.py), `model` (backbone + head),
`loss`, `optim`, `train`, `checkpoint`, `dist`, `monitor` (the kNN retrieval monitor, off by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from personvit.config.data import PretrainDataConfig
from personvit.config.model import BackboneConfig
from personvit.config.sections import CheckpointConfig, DistConfig, RunConfig
from personvit.precision import Precision, canonical_precision


@dataclass
class HeadConfig:
    """DINO/iBOT projection head (SPEC.md section 2).

    Attributes:
        out_dim: CLS prototypes K.
        patch_out_dim: patch prototypes Kp (must equal out_dim with shared_head).
        hidden_dim: MLP hidden size.
        bottleneck_dim: size before the L2 normalisation.
        nlayers: MLP layers.
        shared_head: CLS and patches share the last layer too (iBOT ViT-S).
        norm_last_layer: freeze the last layer's weight norm at 1.
    """

    out_dim: int = 8192
    patch_out_dim: int = 8192
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    shared_head: bool = True
    norm_last_layer: bool = False

    def __post_init__(self) -> None:
        for name in ("out_dim", "patch_out_dim", "hidden_dim", "bottleneck_dim", "nlayers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.shared_head and self.patch_out_dim != self.out_dim:
            raise ValueError(
                f"shared_head needs patch_out_dim == out_dim, got {self.patch_out_dim} != {self.out_dim}"
            )


@dataclass
class PretrainModelConfig(BackboneConfig):
    """Student/teacher backbone (SPEC.md section 1; shared fields in config/model.py) and head.

    Attributes:
        patch_size: patch side in pixels (must equal `data.patch_size`, the mask grid), so always set.
        embed_dim, depth, num_heads, mlp_ratio: shrink the named arch (tests, demo); None = the arch's.
        drop_path_rate: stochastic depth of the student (the teacher has none).
        init: None (random init) or a backbone file: a timm / ImageNet state dict, an iBOT/DINO
            checkpoint or one of ours (Table 5 "w/ PT"); position embeddings are resized.
        head: projection head.
    """

    SHAPE_KEYS: ClassVar[tuple[str, ...]] = (*BackboneConfig.SHAPE_KEYS, "mlp_ratio")

    patch_size: int = 16
    mlp_ratio: float | None = None
    init: str | None = None
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class PretrainLossConfig:
    """DINO + MIM loss (SPEC.md section 3); see `personvit.losses.DINOMIMLoss`.

    Attributes:
        student_temp: student temperature.
        teacher_temp, teacher_patch_temp: teacher temperatures after the warm-up.
        warmup_teacher_temp, warmup_teacher_patch_temp: teacher temperatures at epoch 0.
        warmup_teacher_temp_epochs: linear warm-up length (epochs).
        center_momentum, center_momentum2: EMA momentum of the CLS / patch centres.
        lambda1: weight of the DINO CLS term.
        lambda2: weight of the MIM patch term; 0 is the "w/o MIM" ablation (Table 4).
    """

    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 30
    center_momentum: float = 0.9
    center_momentum2: float = 0.9
    lambda1: float = 1.0
    lambda2: float = 1.0

    def __post_init__(self) -> None:
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp", "teacher_patch_temp",
                     "warmup_teacher_patch_temp"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.warmup_teacher_temp_epochs < 0:
            raise ValueError(
                f"warmup_teacher_temp_epochs must be >= 0, got {self.warmup_teacher_temp_epochs}"
            )
        if self.lambda1 < 0 or self.lambda2 < 0 or self.lambda1 + self.lambda2 == 0:
            raise ValueError(
                f"lambda1/lambda2 must be >= 0 and not both 0, got {self.lambda1}/{self.lambda2}"
            )


@dataclass
class PretrainOptimConfig:
    """AdamW, schedules per iteration, clipping, EMA teacher (SPEC.md section 6).

    Attributes:
        base_lr: learning rate per 256 images of total batch (lr = base_lr * total_batch / 256).
        max_lr: cap of the scaled learning rate (the paper's 2e-3 for large batches).
        min_lr: end of the cosine.
        warmup_epochs: linear warm-up from 0, per iteration.
        weight_decay, weight_decay_end: cosine weight-decay schedule (no decay on biases / 1-D tensors).
        betas: AdamW betas.
        clip_grad: per-tensor gradient norm clip (0 = off).
        freeze_last_layer: epochs during which the heads' last layer gets no update.
        momentum_teacher, momentum_teacher_end: cosine EMA momentum of the teacher, per iteration.
    """

    base_lr: float = 5e-4
    max_lr: float = 2e-3
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0

    def __post_init__(self) -> None:
        if self.base_lr <= 0 or self.max_lr <= 0 or self.min_lr < 0:
            raise ValueError(
                f"base_lr/max_lr must be > 0 and min_lr >= 0, got {self.base_lr}/{self.max_lr}/{self.min_lr}"
            )
        for name in ("warmup_epochs", "freeze_last_layer"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.weight_decay_end < 0 or self.clip_grad < 0:
            raise ValueError("weight_decay, weight_decay_end and clip_grad must be >= 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")
        for name in ("momentum_teacher", "momentum_teacher_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def scaled_lr(self, total_batch: int) -> float:
        """Peak learning rate for a total batch: base_lr * total_batch / 256, capped at max_lr."""
        return min(self.base_lr * total_batch / 256.0, self.max_lr)


@dataclass
class PretrainTrainConfig:
    """Length and numerics.

    Attributes:
        epochs: training length.
        precision: `auto` = bf16 autocast on CUDA (fp16 + scaler where bf16 is unsupported), fp32
            on CPU; `fp16` adds a gradient scaler (vocabulary of personvit/precision.py; `off` is read as `fp32`: no pretraining run
            could record `off`, so rewriting it changes no run folder's fingerprint).
    """

    epochs: int = 300
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        self.precision = canonical_precision(self.precision)


@dataclass
class KnnMonitorConfig:
    """Retrieval of the teacher's backbone features on a small labeled set during pretraining.

    The DINO/iBOT habit of watching kNN accuracy: CLS and mean-patch features of the query and
    gallery splits, L2-normalised, ranked by Euclidean distance; mAP and Rank-1 go to metrics.jsonl.
    It runs on rank 0 only, draws no random numbers of the training stream and leaves the model's
    mode as it was, so a run ends bitwise equal with the monitor on or off.

    Attributes:
        every_epochs: evaluate after every N-th epoch and after the last one (0 = off).
        shards: labeled shard set with the query and gallery splits (as fine-tuning data).
        query_split, gallery_split: split names in its manifest.
        img_size: (H, W) input; None = `data.global_size` (the teacher's training resolution).
        batch_size: images per forward pass.
    """

    every_epochs: int = 0
    shards: str = ""
    query_split: str = "query"
    gallery_split: str = "gallery"
    img_size: tuple[int, int] | None = None
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.every_epochs < 0 or self.batch_size < 1:
            raise ValueError(
                f"every_epochs must be >= 0 and batch_size >= 1, got {self.every_epochs}/{self.batch_size}"
            )
        if self.every_epochs and not self.shards:
            raise ValueError("every_epochs > 0 needs shards (a labeled shard set with query/gallery splits)")
        if self.img_size is not None and min(self.img_size) <= 0:
            raise ValueError(f"img_size must be positive, got {list(self.img_size)}")


@dataclass
class PretrainConfig:
    """`personvit pretrain` configuration: every key of the recipe."""

    data: PretrainDataConfig
    run: RunConfig = field(default_factory=RunConfig)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    loss: PretrainLossConfig = field(default_factory=PretrainLossConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(keep_every_epochs=20))
    dist: DistConfig = field(default_factory=DistConfig)
    monitor: KnnMonitorConfig = field(default_factory=KnnMonitorConfig)

    def __post_init__(self) -> None:
        # Cross-section checks: a mismatch here would only surface as a shape error mid-step.
        size = self.monitor.img_size or self.data.global_size
        if any(v % self.model.patch_size for v in size):
            raise ValueError(
                f"monitor.img_size {list(size)} is not a multiple of model.patch_size {self.model.patch_size}"
            )
        if self.model.patch_size != self.data.patch_size:
            raise ValueError(
                f"model.patch_size {self.model.patch_size} != data.patch_size {self.data.patch_size} "
                "(the student masks are laid out on the model's patch grid)"
            )
        if self.optim.warmup_epochs > self.train.epochs:
            raise ValueError(
                f"optim.warmup_epochs {self.optim.warmup_epochs} > train.epochs {self.train.epochs}"
            )
