"""The BoT ReID model: ViT backbone -> CLS feature -> BNNeck -> bias-free ID classifier.

As in the authors' fine-tuning code (SPEC.md section 7): the retrieval and triplet feature is the
CLS token after the backbone's final LayerNorm (pre-BN); the ID logits come from BatchNorm1d with
its bias frozen at zero (so the BN feature stays centred, Luo et al.'s BNNeck) followed by a linear
classifier without bias, initialised with std 0.001.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from personvit.checkpoint import CheckpointError
from personvit.models.vit import VisionTransformer

__all__ = ["ReIDModel", "load_reid_weights"]  # built by personvit/models/build.py


class ReIDModel(nn.Module):
    """Backbone + BNNeck + classifier.

    Args:
        backbone: a ViT whose `forward_features` returns [B, 1 + N, D] normed tokens.
        num_classes: training identities; 0 builds a feature extractor without classifier.
        classifier_std: init std of the classifier weights.
    """

    def __init__(self, backbone: VisionTransformer, num_classes: int, classifier_std: float = 0.001):
        super().__init__()
        dim = backbone.embed_dim
        self.backbone = backbone
        # The mask token is for pretraining only; frozen so DDP sees no parameter without a gradient.
        backbone.masked_embed.requires_grad_(False)
        self.num_classes = int(num_classes)
        self.bottleneck = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier: nn.Linear | None = None
        if num_classes > 0:
            self.classifier = nn.Linear(dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=classifier_std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-BN CLS feature [B, D] (retrieval and triplet feature)."""
        return self.backbone.forward_features(x)[:, 0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pre-BN CLS feature [B, D], ID logits [B, C] or None without classifier)."""
        feat = self.features(x)
        if self.classifier is None:
            return feat, None
        return feat, self.classifier(self.bottleneck(feat))


def load_reid_weights(model: ReIDModel, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a fine-tuned ReID state dict for inference: backbone and BNNeck must match, the
    classifier (whose size is the training set's identity count) is ignored.

    Args:
        model: the model (usually built with `num_classes=0`).
        state: `ReIDModel.state_dict()` of a fine-tuning checkpoint.
        source: where it came from, for error messages.
    """
    keep = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    own = model.state_dict()
    for k, v in keep.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
                " (check model.arch / the architecture overrides)"
            )
    result = model.load_state_dict(keep, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{source}: not a ReID model of this architecture (missing {missing[:4]}, "
            f"unexpected {list(result.unexpected_keys)[:4]})"
        )
