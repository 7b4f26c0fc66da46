"""Vision Transformer backbone for PersonViT: timm's layers, iBOT's masked embedding, any grid.

Built from timm's `PatchEmbed`, `Block` (with our `Attention` for switchable kernels), `LayerNorm`
and `trunc_normal_`, and named exactly like `timm.models.vision_transformer.VisionTransformer`, so a
timm ViT state dict (minus its classifier `head.*`) loads with only `masked_embed` missing.

Differences from timm's ViT, all needed by the method (SPEC.md section 1):
- `forward_features(x, mask)` swaps the patch embeddings of masked patches for the learnable
  `masked_embed` *before* the position embeddings are added (iBOT eq. 5).
- The position grid (16x8 for 256x128 inputs) is interpolated bicubically to whatever grid the
  input has (6x4 for 96x64 local crops); the CLS position is kept. Grids are never assumed square.
- `forward` returns the normed tokens [B, 1 + N, D] (CLS first); heads live elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm, PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from personvit.models.attention import Attention, AttentionBackend, check_backend
from personvit.models.drop_path import install_sample_drop_path

__all__ = ["VIT_ARCHS", "VisionTransformer", "build_vit", "interpolate_pos_embed", "num_flops_forward"]

# name -> (embed_dim, depth, num_heads); patch 16, mlp ratio 4, qkv bias, LayerNorm eps 1e-6.
VIT_ARCHS: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
}
_OVERRIDES = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "in_chans")


def interpolate_pos_embed(
    pos_embed: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]
) -> torch.Tensor:
    """Resize a [1, 1 + h*w, D] position embedding from one (h, w) grid to another, CLS kept.

    Bicubic without antialiasing (as DINO / iBOT), computed in float32 and cast back.

    Args:
        pos_embed: [1, 1 + src_h * src_w, D], CLS position first.
        src_grid: (src_h, src_w) the patch positions are laid out on.
        dst_grid: (dst_h, dst_w) wanted.
    """
    src_h, src_w = int(src_grid[0]), int(src_grid[1])
    dst_h, dst_w = int(dst_grid[0]), int(dst_grid[1])
    if pos_embed.shape[1] != 1 + src_h * src_w:
        raise ValueError(f"pos_embed has {pos_embed.shape[1] - 1} patch positions, not {src_h}x{src_w}")
    if (src_h, src_w) == (dst_h, dst_w):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    grid = patch_pos.float().reshape(1, src_h, src_w, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dst_h, dst_w), mode="bicubic", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, dst_h * dst_w, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)


class VisionTransformer(nn.Module):
    """Pre-norm ViT with a CLS token, absolute position embeddings and a mask token.

    Args:
        img_size: (H, W) the position grid is laid out for, e.g. (256, 128).
        patch_size: square patch side in pixels.
        in_chans: input channels.
        embed_dim: token dimension.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden size / embed_dim.
        drop_path_rate: stochastic depth of the last block (linearly increasing from 0).
        attn_backend: attention kernel, see `personvit.models.attention`.
    """

    def __init__(
        self,
        img_size: tuple[int, int] = (256, 128),
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        attn_backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        img_size = (int(img_size[0]), int(img_size[1]))
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        check_backend(attn_backend)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.img_size = img_size
        self.pos_grid = (img_size[0] // patch_size, img_size[1] // patch_size)

        # strict_img_size=False: any input divisible by the patch passes (we check it ourselves).
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid[0] * self.pos_grid[1], embed_dim))
        self.masked_embed = nn.Parameter(torch.zeros(1, embed_dim))
        # Python floats, not torch.linspace: building under torch.device('meta') must work too.
        rates = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
        self.blocks = nn.Sequential(
            *[
                Block(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=True,
                    drop_path=rates[i],
                    norm_layer=_layer_norm,
                    attn_layer=Attention,
                )
                for i in range(depth)
            ]
        )
        # Drop path decided per sample when the trainer gives uniforms (models/drop_path.py says why).
        self.drop_path_slots = install_sample_drop_path(self.blocks)
        self.norm = _layer_norm(embed_dim)
        self.set_attn_backend(attn_backend)
        self._init_weights()

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters weight decay must not reach (timm's hook, read by `engine/optim.py`).

        Biases and 1-D tensors (LayerNorm scales and shifts), iBOT's `get_params_groups` rule. Unlike
        timm's ViT, `pos_embed`, `cls_token` and `masked_embed` are not listed: iBOT and PersonViT
        decay them, and listing them would change every pretraining number.
        """
        return {n for n, p in self.named_parameters() if n.endswith(".bias") or p.ndim == 1}

    def _init_weights(self) -> None:
        # iBOT's init: trunc_normal(0.02) for positions, CLS and linear weights; zero mask token.
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_attn_backend(self, backend: AttentionBackend) -> None:
        """Switch every block's attention kernel (`auto`, `xformers`, `sdpa`, `math`)."""
        for block in self.blocks:
            block.attn.set_backend(backend)
        self.attn_backend = backend

    def grid_size(self, img_hw: Sequence[int]) -> tuple[int, int]:
        """Patch grid (h, w) of an input of size (H, W); errors if not divisible by the patch."""
        h, w = int(img_hw[0]), int(img_hw[1])
        if h % self.patch_size or w % self.patch_size or h <= 0 or w <= 0:
            raise ValueError(
                f"input size {h}x{w} is not a positive multiple of the patch size {self.patch_size}"
            )
        return h // self.patch_size, w // self.patch_size

    def prepare_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B, C, H, W] -> tokens [B, 1 + N, D] with masking and position embeddings.

        Args:
            x: images; H and W multiples of the patch size.
            mask: [B, N] or [B, h, w] bool, True = replace that patch by `masked_embed`.
        """
        if x.ndim != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
        grid = self.grid_size(x.shape[-2:])
        tokens = self.patch_embed(x)  # [B, N, D]
        if mask is not None:
            b, n = tokens.shape[:2]
            if mask.shape[0] != b or mask[0].numel() != n:
                raise ValueError(
                    f"mask of shape {tuple(mask.shape)} does not match {b} images of {grid[0]}x{grid[1]} patches"
                )
            mask = mask.reshape(b, n, 1).to(device=tokens.device, dtype=torch.bool)
            tokens = torch.where(mask, self.masked_embed, tokens)
        # No casts: under autocast the bf16 patch embeddings are promoted by the float32 CLS and
        # positions, so the residual stream stays float32 as in timm's ViT.
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        pos = interpolate_pos_embed(self.pos_embed, self.pos_grid, grid)
        return torch.cat([cls, tokens], dim=1) + pos

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normed tokens [B, 1 + N, D], CLS first. See `prepare_tokens` for the arguments."""
        return self.norm(self.blocks(self.prepare_tokens(x, mask)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Same as `forward_features` (the backbone has no classifier)."""
        return self.forward_features(x, mask)

    @torch.no_grad()
    def last_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities of the last block, [B, heads, 1 + N, 1 + N] (for visualisation)."""
        tokens = self.prepare_tokens(x)
        for block in self.blocks[:-1]:
            tokens = block(tokens)
        last = self.blocks[-1]
        return last.attn.attention_map(last.norm1(tokens))


def _layer_norm(dim: int, **kwargs) -> nn.LayerNorm:
    # eps 1e-6 as timm / DINO / iBOT ViTs; kwargs carry timm's device/dtype.
    return LayerNorm(dim, eps=1e-6, **kwargs)


def build_vit(
    name: str,
    img_size: Sequence[int] = (256, 128),
    attn_backend: AttentionBackend = "auto",
    drop_path_rate: float = 0.0,
    **overrides: float,
) -> VisionTransformer:
    """Build a named ViT (`vit_tiny`, `vit_small`, `vit_base`), optionally shrunk for tests.

    Args:
        name: architecture name, see `VIT_ARCHS`.
        img_size: (H, W) the position embedding grid is laid out for.
        attn_backend: `auto` | `xformers` | `sdpa` | `math`.
        drop_path_rate: stochastic depth of the last block (0.1 student, 0 teacher in the recipe).
        **overrides: any of patch_size, embed_dim, depth, num_heads, mlp_ratio, in_chans.
    """
    if name not in VIT_ARCHS:
        raise ValueError(f"unknown ViT {name!r}; choose one of {', '.join(VIT_ARCHS)}")
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise ValueError(
            f"build_vit: unknown override(s) {', '.join(unknown)}; allowed: {', '.join(_OVERRIDES)}"
        )
    embed_dim, depth, num_heads = VIT_ARCHS[name]
    kwargs = dict(
        patch_size=16, in_chans=3, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=4.0
    )
    kwargs.update(overrides)
    for key in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
        value = kwargs[key]
        if isinstance(value, bool) or int(value) != value or value <= 0:
            raise ValueError(f"build_vit: {key} must be a positive integer, got {value!r}")
        kwargs[key] = int(value)
    if len(img_size) != 2:
        raise ValueError(f"img_size must be (H, W), got {tuple(img_size)}")
    return VisionTransformer(
        img_size=(int(img_size[0]), int(img_size[1])),
        drop_path_rate=float(drop_path_rate),
        attn_backend=attn_backend,
        **kwargs,
    )


def num_flops_forward(model: VisionTransformer, img_hw: Sequence[int]) -> float:
    """Analytic forward FLOPs (multiply-add = 2) of the backbone for one image.

    Args:
        model: the ViT.
        img_hw: input (H, W).
    """
    h, w = model.grid_size(img_hw)
    n, d = h * w, model.embed_dim
    t = n + 1
    hidden = model.blocks[0].mlp.fc1.out_features
    embed = 2 * n * d * (3 * model.patch_size**2)
    per_block = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * hidden
    return float(embed + len(model.blocks) * per_block)
