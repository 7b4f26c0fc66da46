"""The ViT backbone section both `model` schemas share (pretraining and fine-tuning).

`PretrainModelConfig` (config/pretrain.py) adds `mlp_ratio`, `init` and the projection `head`;
`ReIDModelConfig` (config/finetune.py) adds `init`, `init_strict` and `classifier_std`. Both inherit
the fields here, so the YAML keys stay flat (`model.embed_dim`) and `BackboneConfig.vit_overrides`
maps either to `build_vit` arguments in one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

ViTArch = Literal["vit_tiny", "vit_small", "vit_base"]
AttnBackend = Literal["auto", "xformers", "sdpa", "math"]


@dataclass
class BackboneConfig:
    """Architecture and attention kernel of the ViT backbone.

    Attributes:
        arch: `vit_tiny`, `vit_small` or `vit_base` (see personvit.models.build_vit).
        patch_size, embed_dim, depth, num_heads: overrides of the named architecture for tiny models;
            `UNSET` (None here; 0 in the fine-tuning schema, the spelling its run folders record) keeps
            the architecture's value.
        drop_path_rate: stochastic depth of the trained network (the pretraining teacher has none).
        attn_backend: `auto` | `xformers` | `sdpa` | `math`.
    """

    UNSET: ClassVar[int | None] = None
    SHAPE_KEYS: ClassVar[tuple[str, ...]] = ("patch_size", "embed_dim", "depth", "num_heads")

    arch: ViTArch = "vit_small"
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = 0.1
    attn_backend: AttnBackend = "auto"

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        for name in ("patch_size", "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            if value != self.UNSET and (value is None or value < 1):
                raise ValueError(f"{name} must be >= 1 ({self.UNSET} = the architecture's), got {value}")

    def vit_overrides(self) -> dict[str, float]:
        """Keyword overrides for `build_vit`: the `SHAPE_KEYS` that are set."""
        values = {k: getattr(self, k) for k in self.SHAPE_KEYS}
        return {k: v for k, v in values.items() if v is not None and v != self.UNSET}
