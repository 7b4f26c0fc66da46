"""The one place a model is built from a config: pretraining pair, fine-tuning, evaluation, export, viz.

Each engine used to turn its `model` section into `build_vit` keyword arguments its own way (0 = keep
in the fine-tuning schema, None = keep in the pretraining one, a raw `config.yaml` in the figures).
Here both typed sections map to one call, so a new architecture key is added once. Weights are not
loaded here (models/loading.py and models/reid.py do that); only architecture and initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from personvit.config.core import from_dict
from personvit.config.finetune import ReIDModelConfig
from personvit.config.model import BackboneConfig
from personvit.config.pretrain import PretrainModelConfig
from personvit.models.heads import DINOHead
from personvit.models.multicrop import MultiCropWrapper
from personvit.models.reid import ReIDModel
from personvit.models.vit import VisionTransformer, build_vit
from personvit.rng import Stream, derive_seed

__all__ = ["ModelSection", "build_backbone", "build_eval_reid_model", "build_finetune_model", "build_reid_model",
           "build_ssl_network", "build_student_teacher", "model_arch", "model_section"]

ModelSection = PretrainModelConfig | ReIDModelConfig


def build_backbone(model: BackboneConfig, img_size: Sequence[int], drop_path_rate: float = 0.0,
                   attn_backend: str | None = None) -> VisionTransformer:
    """A freshly initialised ViT of `model`'s architecture.

    Args:
        model: the `model` section (pretraining or fine-tuning schema).
        img_size: (H, W) input size (lays out the position grid).
        drop_path_rate: stochastic depth (0 for inference).
        attn_backend: attention kernel; None = the section's.
    """
    return build_vit(model.arch, img_size=tuple(img_size), attn_backend=attn_backend or model.attn_backend,
                     drop_path_rate=drop_path_rate, **model.vit_overrides())


def build_reid_model(arch: str, img_size: tuple[int, int], num_classes: int, drop_path_rate: float = 0.0,
                     attn_backend: str = "auto", classifier_std: float = 0.001,
                     overrides: Mapping[str, int] | None = None) -> ReIDModel:
    """A ReID model (ViT + BNNeck + classifier) with a freshly initialised backbone.

    Args:
        arch: `vit_tiny`, `vit_small`, `vit_base`.
        img_size: (H, W) input size.
        num_classes: training identities (0 = feature extractor only).
        drop_path_rate: stochastic depth.
        attn_backend: attention kernel.
        classifier_std: classifier init std.
        overrides: architecture overrides for `build_vit` (tiny test models).
    """
    backbone = build_vit(arch, img_size=img_size, attn_backend=attn_backend, drop_path_rate=drop_path_rate,
                         **dict(overrides or {}))
    return ReIDModel(backbone, num_classes, classifier_std)


def build_finetune_model(model: ReIDModelConfig, img_size: Sequence[int], num_classes: int) -> ReIDModel:
    """The model `personvit finetune` trains (the section's drop path and classifier init).

    Args:
        model: the fine-tuning `model` section.
        img_size: `data.img_size`.
        num_classes: training identities.
    """
    return build_reid_model(model.arch, tuple(img_size), num_classes, model.drop_path_rate, model.attn_backend,
                            model.classifier_std, model.vit_overrides())


def model_arch(model: ReIDModelConfig, img_size: Sequence[int]) -> dict[str, Any]:
    """The architecture record stored in fine-tuning checkpoints (read back by `build_eval_reid_model`).

    Args:
        model: the fine-tuning `model` section.
        img_size: `data.img_size`.
    """
    return {"arch": model.arch, "img_size": [int(img_size[0]), int(img_size[1])], **model.vit_overrides()}


def build_eval_reid_model(model: ReIDModelConfig, img_size: Sequence[int],
                          arch_record: Mapping[str, Any] | None = None) -> ReIDModel:
    """A feature extractor (no classifier, no drop path) for evaluation and export.

    Args:
        model: the `model` section (architecture unless `arch_record` is given; attention kernel).
        img_size: `data.img_size`.
        arch_record: a fine-tuning checkpoint's `model_arch` ({arch, img_size, overrides...}): the
            architecture the weights were trained with wins over the recipe's.
    """
    if arch_record is None:
        return build_reid_model(model.arch, tuple(img_size), 0, attn_backend=model.attn_backend,
                                overrides=model.vit_overrides())
    overrides = {k: v for k, v in arch_record.items() if k not in ("arch", "img_size")}
    return build_reid_model(arch_record["arch"], tuple(img_size), 0, attn_backend=model.attn_backend,
                            overrides=overrides)


def build_ssl_network(model: PretrainModelConfig, img_size: Sequence[int], drop_path_rate: float) -> MultiCropWrapper:
    """One pretraining network: `MultiCropWrapper(ViT, DINOHead)`.

    Args:
        model: the pretraining `model` section (backbone and `head`).
        img_size: (H, W) of the global views.
        drop_path_rate: the student's `model.drop_path_rate`; 0 for the teacher.
    """
    backbone = build_backbone(model, img_size, drop_path_rate)
    h = model.head
    head = DINOHead(backbone.embed_dim, out_dim=h.out_dim, patch_out_dim=h.patch_out_dim, hidden_dim=h.hidden_dim,
                    bottleneck_dim=h.bottleneck_dim, nlayers=h.nlayers, shared_head=h.shared_head,
                    norm_last_layer=h.norm_last_layer)
    return MultiCropWrapper(backbone, head)


def build_student_teacher(model: PretrainModelConfig, img_size: Sequence[int],
                          seed: int) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    """Student (drop path `model.drop_path_rate`) and teacher (no drop path) with equal weights.

    The same draws as `personvit.engine.ssl_model.build_student_teacher` (bitwise, see
    tests/personvit/models/test_build.py), so pretraining can switch to this one without a change.

    Args:
        model: the pretraining `model` section.
        img_size: (H, W) of the global views.
        seed: run seed; the initial weights derive from it alone.
    Returns:
        (student, teacher); the teacher's parameters do not require gradients.
    """
    state = torch.get_rng_state()
    try:
        # Weight init draws from torch's global generator: pin it so every rank builds the same net,
        # and restore it so building has no side effect on later draws.
        torch.manual_seed(derive_seed(seed, Stream.INIT))
        student = build_ssl_network(model, img_size, model.drop_path_rate)
        teacher = build_ssl_network(model, img_size, 0.0)
    finally:
        torch.set_rng_state(state)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def model_section(run_config: Mapping[str, Any]) -> ModelSection:
    """The typed `model` section of a run folder's `config.yaml` (pretraining or fine-tuning run).

    A pretraining config is told apart by its pretraining-only keys (`loss`, `model.head`,
    `data.global_size`); anything else is read with the fine-tuning schema.

    Args:
        run_config: the YAML mapping.
    Raises:
        ConfigError: a key the schema does not know, or a wrong type, naming `model.<key>`.
    """
    model = run_config.get("model") or {}
    data = run_config.get("data") or {}
    pretraining = "loss" in run_config or "head" in model or "global_size" in data
    return from_dict(PretrainModelConfig if pretraining else ReIDModelConfig, model, prefix="model")
