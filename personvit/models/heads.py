"""DINO / iBOT projection head (SPEC.md section 2).

MLP dim -> hidden -> hidden -> bottleneck with GELU, L2-normalise, then a weight-normalised linear
layer without bias to the prototype logits. As in iBOT, the MLP is shared between the CLS token
and the patch tokens; `shared_head=True` also shares the last layer (so `patch_out_dim` must equal
`out_dim`), `shared_head=False` gives the patches their own last layer with `patch_out_dim`
prototypes. Parameter names follow iBOT (`mlp.0`, `mlp.2`, `mlp.4`, `last_layer.weight_g`,
`last_layer.weight_v`, `last_layer2.*`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

__all__ = ["DINOHead", "WeightNormLinear"]


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation, w = g * v / ||v|| per output unit.

    Written out rather than `torch.nn.utils.weight_norm` (deprecated, a forward hook) or the
    parametrization API (different state-dict keys): this keeps DINO's `weight_g` / `weight_v`
    names, deep-copies cleanly for the EMA teacher and needs no hooks.

    Args:
        in_features: input size.
        out_features: number of prototypes.
        fix_norm: freeze `weight_g` at 1 (DINO's `norm_last_layer=True`).
    """

    def __init__(self, in_features: int, out_features: int, fix_norm: bool = False) -> None:
        super().__init__()
        v = torch.empty(out_features, in_features)
        trunc_normal_(v, std=0.02)
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.ones(out_features, 1), requires_grad=not fix_norm)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """Projection head applied to CLS and patch tokens.

    Args:
        in_dim: backbone token dimension.
        out_dim: CLS prototypes K (8192 in the recipe).
        patch_out_dim: patch prototypes Kp (8192); must equal out_dim when shared_head.
        hidden_dim: MLP hidden size (2048).
        bottleneck_dim: size before the L2 normalisation (256).
        nlayers: MLP layers (3).
        shared_head: share the last layer between CLS and patches (iBOT ViT-S: True).
        norm_last_layer: freeze the last layers' weight norm at 1 (iBOT ViT-S: False).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 8192,
        patch_out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        shared_head: bool = True,
        norm_last_layer: bool = False,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"head nlayers must be >= 1, got {nlayers}")
        if shared_head and patch_out_dim != out_dim:
            raise ValueError(f"shared_head needs patch_out_dim == out_dim, got {patch_out_dim} != {out_dim}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fix_norm=norm_last_layer)
        self.last_layer2 = (
            None if shared_head else WeightNormLinear(bottleneck_dim, patch_out_dim, norm_last_layer)
        )
        self.out_dim = out_dim
        self.patch_out_dim = patch_out_dim

    def last_layers(self) -> list[WeightNormLinear]:
        """The prototype layers (frozen during the first epoch by the trainer)."""
        return [self.last_layer] if self.last_layer2 is None else [self.last_layer, self.last_layer2]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """MLP then L2 normalisation: [..., in_dim] -> [..., bottleneck_dim]."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for CLS and patches.

        Args:
            tokens: [B, 1 + N, D] backbone tokens (CLS first), or [B, D] CLS features only.

        Returns:
            (cls_logits [B, K], patch_logits [B, N, Kp] or None when only CLS was given).
        """
        if tokens.ndim == 2:
            return self.last_layer(self.project(tokens)), None
        z = self.project(tokens)
        patch_layer = self.last_layer if self.last_layer2 is None else self.last_layer2
        return self.last_layer(z[:, 0]), patch_layer(z[:, 1:])
