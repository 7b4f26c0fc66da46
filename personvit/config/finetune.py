"""Schemas of `personvit finetune` (BoT fine-tuning) and `personvit evaluate` (SPEC.md sections 7-8).

Defaults are the authors' released fine-tuning recipe for ViT-S/16 on Market-1501; every value is a
key so the recipes in `configs/finetune/` only state what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from personvit.config.core import ConfigError, from_dict
from personvit.config.model import BackboneConfig
from personvit.config.sections import CheckpointConfig, DistConfig, RunConfig
from personvit.precision import Precision


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def _check_pair(name: str, pair: tuple[float, float], lo: float) -> None:
    if not (lo <= pair[0] <= pair[1]):
        raise ValueError(f"{name} must be an increasing pair >= {lo}, got {list(pair)}")


@dataclass
class ReIDDataConfig:
    """Labeled shard set, input size and the fine-tuning augmentations.

    Attributes:
        shards: shard folder with `train`, `query`, `gallery` splits (required for training).
        train_split, query_split, gallery_split: split names inside the manifest.
        img_size: (H, W) network input.
        num_workers: DataLoader workers per rank; the batches are identical for any value.
        flip_p: horizontal flip probability.
        pad: zero padding (pixels) before the random crop back to `img_size`.
        erase_p: random erasing probability (per-pixel normal noise).
        erase_area: erased area as a fraction of the image.
        erase_aspect: erased box aspect ratio range (drawn log-uniformly).
        mean, std: per-channel normalisation (0.5 / 0.5 in the authors' code).
    """

    shards: str = ""
    train_split: str = "train"
    query_split: str = "query"
    gallery_split: str = "gallery"
    img_size: tuple[int, int] = (256, 128)
    num_workers: int = 4
    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 1.0 / 3.0)
    erase_aspect: tuple[float, float] = (0.3, 3.3)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if min(self.img_size) <= 0:
            raise ValueError(f"img_size must be positive, got {list(self.img_size)}")
        if self.num_workers < 0 or self.pad < 0:
            raise ValueError("num_workers and pad must be >= 0")
        _check_prob("flip_p", self.flip_p)
        _check_prob("erase_p", self.erase_p)
        _check_pair("erase_area", self.erase_area, 0.0)
        _check_pair("erase_aspect", self.erase_aspect, 1e-6)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {list(self.std)}")


@dataclass
class ReIDModelConfig(BackboneConfig):
    """Backbone (shared fields in config/model.py), BNNeck and where the backbone's weights come from.

    Attributes:
        patch_size, embed_dim, depth, num_heads: overrides of the named architecture (0 = keep),
            for tiny CPU models that must match a tiny pretraining run.
        drop_path_rate: stochastic depth of the last block during fine-tuning.
        init: starting checkpoint: ours (a `ckpt-*.pt` file or a pretraining run folder; its teacher
            is used), or a released iBOT/PersonViT file; empty = random init.
        init_strict: fail when the checkpoint's backbone misses any weight (else log and go on).
        classifier_std: init std of the bias-free ID classifier.
    """

    UNSET: ClassVar[int | None] = 0

    patch_size: int = 0
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    init: str = ""
    init_strict: bool = True
    classifier_std: float = 0.001


@dataclass
class FinetuneTrainConfig:
    """Sampler, optimiser, schedule and losses (BoT as in the authors' code).

    Attributes:
        epochs: training epochs.
        num_ids: identities per global batch (P).
        num_instances: images per identity (K); global batch = P x K, split across ranks by identity.
        base_lr: SGD learning rate at `lr_ref_batch`; scaled linearly to the actual global batch.
        lr_ref_batch: batch size `base_lr` refers to.
        bias_lr_factor: learning-rate multiplier of biases.
        momentum: SGD momentum.
        weight_decay: on weights; `weight_decay_bias` on biases.
        warmup_epochs: linear warmup from `warmup_factor` x lr (per epoch; a run shorter than the
            warmup simply never reaches the full lr).
        warmup_factor: start of the warmup as a fraction of the lr.
        min_lr_factor: cosine floor as a fraction of the lr.
        id_loss_weight, triplet_loss_weight: loss weights (1:1).
        label_smoothing: cross-entropy label smoothing (0 in the recipe).
        amp: precision (personvit/precision.py): `auto` = on CUDA bf16 when supported, else fp16 with a
            grad scaler, fp32 on CPU; `bf16` / `fp16` force a dtype (also under CPU autocast); `fp32`
            (`off`, the older spelling, is accepted and kept as written: run folders record it).
        max_steps_per_epoch: cap on batches per epoch (0 = a full pass of the PK sampler); for demos.
    """

    epochs: int = 120
    num_ids: int = 16
    num_instances: int = 4
    base_lr: float = 4e-4
    lr_ref_batch: int = 64
    bias_lr_factor: float = 2.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_bias: float = 1e-4
    warmup_epochs: int = 20
    warmup_factor: float = 0.01
    min_lr_factor: float = 0.002
    id_loss_weight: float = 1.0
    triplet_loss_weight: float = 1.0
    label_smoothing: float = 0.0
    amp: Precision = "auto"
    max_steps_per_epoch: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.num_ids < 2 or self.num_instances < 2:
            raise ValueError("num_ids and num_instances must be >= 2 (batch-hard mining needs positives and negatives)")
        if self.base_lr <= 0 or self.lr_ref_batch < 1:
            raise ValueError("base_lr must be > 0 and lr_ref_batch >= 1")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        if self.max_steps_per_epoch < 0:
            raise ValueError("max_steps_per_epoch must be >= 0")


@dataclass
class EvalOptions:
    """How features are compared (SPEC.md section 8).

    Attributes:
        batch_size: images per forward pass.
        flip: average the features of the image and its mirror.
        rerank: k-reciprocal re-ranking (Zhong et al.) with `k1`, `k2`, `lambda_value`.
        max_rank: length of the CMC curve.
        per_query_csv: also write `per_query.csv`.
        save_features: also write `features.npz` (q/g feats, pids, camids, keys).
    """

    batch_size: int = 256
    flip: bool = False
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    max_rank: int = 50
    per_query_csv: bool = False
    save_features: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_rank < 1 or self.k1 < 1 or self.k2 < 1:
            raise ValueError("batch_size, max_rank, k1 and k2 must be >= 1")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ValueError(f"lambda_value must be in [0, 1], got {self.lambda_value}")


@dataclass
class FinetuneConfig:
    """`personvit finetune CONFIG [key=value ...]`."""

    run: RunConfig = field(default_factory=RunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    data: ReIDDataConfig = field(default_factory=ReIDDataConfig)
    model: ReIDModelConfig = field(default_factory=ReIDModelConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    eval: EvalOptions = field(default_factory=EvalOptions)

    def __post_init__(self) -> None:
        if not self.data.shards:
            raise ValueError("data.shards is required (a labeled shard folder with train/query/gallery)")


# Sections of a fine-tuning recipe that evaluation reads past: still validated (a typo in the recipe
# fails here as it would in `personvit finetune`), then dropped, so EvaluateConfig holds no training keys.
FINETUNE_ONLY_SECTIONS: dict[str, type] = {
    "train": FinetuneTrainConfig,
    "checkpoint": CheckpointConfig,
    "dist": DistConfig,
}


@dataclass
class EvaluateConfig:
    """`personvit evaluate CONFIG [key=value ...]` (and `personvit export`): takes any fine-tuning recipe.

    Attributes:
        weights: what to evaluate: a fine-tuning run folder or `ckpt-*.pt` (its full ReID model);
            empty = the backbone of `model.init` (a pretraining checkpoint, or random when unset).
        amp: precision of the forward passes (personvit/precision.py, as `train.amp`); unset, it is the recipe's
            `train.amp`, so a model is evaluated at the precision it was fine-tuned at.
    """

    run: RunConfig = field(default_factory=RunConfig)
    data: ReIDDataConfig = field(default_factory=ReIDDataConfig)
    model: ReIDModelConfig = field(default_factory=ReIDModelConfig)
    eval: EvalOptions = field(default_factory=EvalOptions)
    weights: str = ""
    amp: Precision = "auto"

    def __post_init__(self) -> None:
        if not self.data.shards:
            raise ValueError("data.shards is required (a labeled shard folder with query/gallery)")

    @classmethod
    def prepare_config_data(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and drop a fine-tuning recipe's training sections; `train.amp` becomes `amp`.

        Called by `personvit.config.core.from_dict` before the strict key check.

        Args:
            data: the merged recipe mapping (YAML <- overrides).
        """
        out = {k: v for k, v in data.items() if k not in FINETUNE_ONLY_SECTIONS}
        for name, schema in FINETUNE_ONLY_SECTIONS.items():
            if name in data:
                section = from_dict(schema, _section(name, data[name]), prefix=name)
                if name == "train" and "amp" in data[name] and "amp" not in out:
                    out["amp"] = section.amp
        return out


def _section(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"'{name}': expected a section (mapping), got {value!r}")
    return value
