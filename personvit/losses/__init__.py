"""Losses: one per file. `dino_mim` is the pretraining objective (DINO CLS + masked patches)."""

from personvit.losses.dino_mim import (
    DINOMIMLoss,
    LossOutput,
    dino_mim_loss,
    teacher_entropies,
    warmup_temperature,
)

__all__ = ["DINOMIMLoss", "LossOutput", "dino_mim_loss", "teacher_entropies", "warmup_temperature"]
