"""One precision vocabulary and one autocast helper for every engine (pretrain, finetune, evaluate).

The words are `auto`, `fp32`, `bf16`, `fp16` (`train.precision` of pretraining, `train.amp` of
fine-tuning, `amp` of evaluation). `off` is the fine-tuning schema's older spelling of `fp32`: it is
accepted in every schema so no recipe or run folder breaks. Fine-tuning keeps the value as spelled,
because a run folder's resume fingerprint records it and `off` -> `fp32` would read as a change.

Torch is imported lazily: the config schemas import the vocabulary, and `--help` / `personvit-submit`
must not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISION_ALIASES", "Precision", "autocast_settings", "canonical_precision"]

Precision = Literal["auto", "fp32", "bf16", "fp16", "off"]
PRECISION_ALIASES = {"off": "fp32"}  # old spelling -> the word it means


def canonical_precision(precision: str) -> str:
    """The vocabulary's word for `precision` (`off` -> `fp32`; the others as they are).

    Args:
        precision: a value of a `Precision` config key.
    """
    return PRECISION_ALIASES.get(precision, precision)


def autocast_settings(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for plain fp32, use a gradient scaler) of `precision` on `device`.

    `auto`: bf16 on CUDA where supported, else fp16 with a gradient scaler; fp32 on CPU.
    `bf16` / `fp16` force that dtype on any device (CPU autocast runs both, so tests exercise the
    paths); `fp16` always comes with a scaler (its gradients underflow without one).

    Args:
        precision: `auto`, `fp32` (alias `off`), `bf16` or `fp16`.
        device: where the forward passes run.
    """
    import torch

    precision = canonical_precision(precision)
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None, False
    if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16, True
    if precision == "bf16" or precision == "auto":
        return torch.bfloat16, False
    raise ValueError(f"unknown precision {precision!r} (use auto, fp32, bf16 or fp16)")
