"""PersonViT: self-supervised ViT pretraining and ReID fine-tuning, Slurm-native.

Public API: the subpackages and modules below (each states its own names in its `__all__`):
`config` (schemas, load_config), `data` (shards, loaders), `models` (build_vit, ReIDModel),
`losses` (dino_mim_loss), `engine` (trainers), `evaluation` (evaluate_rank), `checkpoint`
(CheckpointManager), `viz`, `report`. They are imported on first use, so `import personvit` stays
torch-free.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["checkpoint", "config", "data", "engine", "evaluation", "losses", "models", "report", "viz"]


def __getattr__(name: str) -> object:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
