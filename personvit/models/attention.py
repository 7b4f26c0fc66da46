"""Multi-head self-attention with switchable kernels: xformers, PyTorch SDPA, or plain math.

The module keeps timm's parameter names (`qkv`, `proj`), so it drops into `timm.models.
vision_transformer.Block` via `attn_layer=` and state dicts stay timm's. Only the kernel that
multiplies q, k, v differs between backends:

- `xformers`: `xformers.ops.memory_efficient_attention`; CUDA tensors in fp16/bf16 only.
- `sdpa`: `torch.nn.functional.scaled_dot_product_attention` (flash / mem-efficient / math chosen
  by PyTorch); runs everywhere.
- `math`: softmax(q k^T / sqrt(d)) v written out; the reference the others are checked against,
  and the only one that can hand back the attention map (for visualisation).
- `auto`: xformers when the input is a half-precision CUDA tensor and xformers is installed, else
  SDPA. Decided per call because a model is built on the CPU and moved afterwards.

Asking for `xformers` where it cannot run is an error, never a silent fallback.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BACKENDS", "Attention", "AttentionBackend", "check_backend", "xformers_available"]

AttentionBackend = Literal["auto", "xformers", "sdpa", "math"]
BACKENDS: tuple[str, ...] = ("auto", "xformers", "sdpa", "math")
_HALF = (torch.float16, torch.bfloat16)


@functools.cache
def xformers_available() -> bool:
    """True when `xformers.ops.memory_efficient_attention` can be imported."""
    try:
        from xformers.ops import memory_efficient_attention  # noqa: F401
    except Exception:  # ImportError, or a broken build that fails while loading its kernels
        return False
    return True


def check_backend(backend: str) -> str:
    """Validate a backend name at build time; returns it.

    Args:
        backend: one of `BACKENDS`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attn_backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "xformers" and not xformers_available():
        raise RuntimeError(
            "attn_backend='xformers' but xformers is not importable; install the extra "
            "(pip install 'personvit[xformers]') or use attn_backend='sdpa'"
        )
    return backend


def _resolve(backend: str, q: torch.Tensor) -> str:
    """The concrete kernel for a call on `q` (auto -> xformers or sdpa)."""
    if backend == "auto":
        return "xformers" if q.is_cuda and q.dtype in _HALF and xformers_available() else "sdpa"
    if backend == "xformers" and not (q.is_cuda and q.dtype in _HALF):
        raise RuntimeError(
            f"attn_backend='xformers' runs only on CUDA tensors in float16/bfloat16; got {q.device.type} "
            f"{str(q.dtype).removeprefix('torch.')} (use autocast on a GPU, or attn_backend='sdpa')"
        )
    return backend


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention on [B, heads, N, d] tensors; returns (output, attention probabilities).

    Args:
        q, k, v: [B, heads, N, head_dim].
        dropout_p: dropout on the attention probabilities (training only).
    """
    scale = q.shape[-1] ** -0.5
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    out = F.dropout(attn, dropout_p) @ v if dropout_p > 0 else attn @ v
    return out, attn


class Attention(nn.Module):
    """timm-compatible multi-head self-attention with a selectable kernel.

    Args:
        dim: token dimension.
        num_heads: number of heads; `dim` must be divisible by it.
        qkv_bias: bias on the fused qkv projection (True for ViT-S/B).
        attn_drop: dropout on attention probabilities (SDPA / math; xformers gets the same p).
        proj_drop: dropout after the output projection.
        backend: one of `BACKENDS`; change later with `set_backend`.
        **timm_kwargs: options timm's `Block` passes to every attention layer; only the defaults
            (no qk-norm, no scale-norm, projection bias) are supported.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: AttentionBackend = "sdpa",
        **timm_kwargs,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        unsupported = {k: v for k, v in timm_kwargs.items() if k in ("qk_norm", "scale_norm", "gated") and v}
        if unsupported or not timm_kwargs.get("proj_bias", True):
            raise ValueError(f"Attention does not support timm options {unsupported or {'proj_bias': False}}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.backend = check_backend(backend)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop_p = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def set_backend(self, backend: AttentionBackend) -> None:
        """Switch the kernel (validated like at build time)."""
        self.backend = check_backend(backend)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, dim] -> [B, N, 3, heads, head_dim]."""
        b, n, _ = x.shape
        return self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)

    @staticmethod
    def _heads_first(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, d]

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """[B, N, dim] -> [B, N, dim]. `attn_mask`/`is_causal` exist for timm's Block; must be unset."""
        if attn_mask is not None or is_causal:
            raise ValueError("Attention: attention masks are not supported (ViT self-attention is full)")
        b, n, c = x.shape
        qkv = self._qkv(x)
        p = self.attn_drop_p if self.training else 0.0
        kernel = _resolve(self.backend, qkv)
        if kernel == "xformers":
            from xformers.ops import memory_efficient_attention

            # xformers takes [B, N, heads, d]: slices of the qkv projection, no permute (as dinov2).
            q, k, v = qkv.unbind(2)
            out = memory_efficient_attention(q, k, v, p=p).reshape(b, n, c)
        else:
            q, k, v = self._heads_first(qkv)
            if kernel == "sdpa":
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:
                out, _ = math_attention(q, k, v, p)
            out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities [B, heads, N, N] for visualisation (math kernel, no dropout)."""
        q, k, v = self._heads_first(self._qkv(x))
        return math_attention(q, k, v)[1]
