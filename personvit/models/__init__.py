"""Backbone, attention kernels, projection heads, multi-crop wrapper and checkpoint loaders."""

from personvit.models.attention import BACKENDS, Attention, xformers_available
from personvit.models.heads import DINOHead, WeightNormLinear
from personvit.models.loading import LoadReport, load_backbone
from personvit.models.multicrop import MultiCropOutput, MultiCropWrapper
from personvit.models.vit import (
    VIT_ARCHS,
    VisionTransformer,
    build_vit,
    interpolate_pos_embed,
    num_flops_forward,
)

__all__ = [
    "BACKENDS",
    "VIT_ARCHS",
    "Attention",
    "DINOHead",
    "LoadReport",
    "MultiCropOutput",
    "MultiCropWrapper",
    "WeightNormLinear",
    "VisionTransformer",
    "build_vit",
    "interpolate_pos_embed",
    "load_backbone",
    "num_flops_forward",
    "xformers_available",
]
