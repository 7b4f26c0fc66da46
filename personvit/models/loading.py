"""Load a ViT backbone from timm, DINO/iBOT/PersonViT training checkpoints, or our own runs.

Accepted sources, detected from their structure:
- our pretraining checkpoints (`personvit.checkpoint` payloads): the `teacher` / `student` entry of
  their `state` (a `MultiCropWrapper` state dict: `backbone.*`, `head.*`);
- iBOT / DINO / PersonViT checkpoints: `teacher` / `student` entries whose keys carry `backbone.`
  or `module.backbone.` (DDP) prefixes, next to `head.*` and optimizer state that are ignored;
- plain backbone state dicts, e.g. timm's ViT (`head.*` classifier skipped), possibly under
  `state_dict` / `model`, and with `module.` or `_orig_mod.` (torch.compile) prefixes.

Position embeddings of another grid are interpolated bicubically (CLS kept) to the model's grid; any
other shape mismatch is an error naming the key. Files load with `weights_only=True`; iBOT/DINO
checkpoints carry their argparse `args`, so `argparse.Namespace` is the one extra type allowed.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from personvit.checkpoint import FORMAT, CheckpointError
from personvit.models.vit import VisionTransformer, interpolate_pos_embed
from personvit.runlog import get_logger

__all__ = ["LoadReport", "extract_backbone_state", "load_backbone", "read_checkpoint_file"]

log = get_logger(__name__)

# Prefixes stripped in this order; "backbone." marks the backbone inside a DINO/iBOT wrapper.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_NESTED_KEYS = ("state_dict", "model", "module")


@dataclass
class LoadReport:
    """What `load_backbone` did: model keys loaded / still missing, checkpoint keys not used."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # head / classifier keys, dropped on purpose
    resized: list[str] = field(default_factory=list)  # position embeddings interpolated

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)}, missing {len(self.missing)} {self.missing[:4]}, "
            f"unexpected {len(self.unexpected)} {self.unexpected[:4]}, skipped {len(self.skipped)}, "
            f"resized {self.resized}"
        )


def read_checkpoint_file(path: str | Path) -> Any:
    """torch.load with weights_only=True (argparse.Namespace allowed); one-line CheckpointError on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"{path}: cannot load with weights_only=True ({type(e).__name__}: {first[:200]})"
        ) from None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def extract_backbone_state(
    obj: Any, which: Literal["teacher", "student"] = "teacher"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone's tensors of a loaded checkpoint, with wrapper prefixes removed.

    Args:
        obj: what `torch.load` returned, or a state dict.
        which: the network of a teacher/student checkpoint (the teacher is what fine-tuning uses).

    Returns:
        (backbone state dict, skipped keys: heads and classifiers).
    """
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        obj = obj.get("state", {})
    # Descend through wrappers ({"state": {"teacher": {...}}}, {"model": {...}}, ...) to the tensors.
    for _ in range(4):
        if not isinstance(obj, Mapping) or _is_state_dict(obj):
            break
        if "teacher" in obj or "student" in obj:
            if which not in obj:
                names = sorted(k for k in obj if isinstance(k, str))
                raise CheckpointError(f"checkpoint has no {which!r} entry (it has {names})")
            obj = obj[which]
        elif nested := next((k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None):
            obj = obj[nested]
        else:
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds no state dict (found {type(obj).__name__})")
    tensors = {_strip(k, _WRAPPER_PREFIXES): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint holds no tensors (keys: {sorted(map(str, obj))[:8]})")

    wrapped = any(k.startswith("backbone.") for k in tensors)
    state, skipped = {}, []
    for key, value in tensors.items():
        if wrapped:
            if not key.startswith("backbone."):
                skipped.append(key)  # head.*, and anything else beside the backbone
                continue
            key = key[len("backbone.") :]
        if key.startswith("head.") or key.startswith("head_dist."):
            skipped.append(key)  # a classifier (timm, DeiT) or a DINO head kept inside the backbone
            continue
        state[key] = value
    return state, skipped


def _source_grid(
    num_positions: int, model: VisionTransformer, src_grid: tuple[int, int] | None
) -> tuple[int, int]:
    """The (h, w) grid a checkpoint's patch positions are laid out on."""
    if src_grid is not None:
        if src_grid[0] * src_grid[1] != num_positions:
            raise CheckpointError(
                f"src_grid {src_grid} does not hold the checkpoint's {num_positions} positions"
            )
        return int(src_grid[0]), int(src_grid[1])
    if num_positions == model.pos_grid[0] * model.pos_grid[1]:
        return model.pos_grid
    side = math.isqrt(num_positions)
    if side * side == num_positions:
        return side, side  # ImageNet checkpoints (14x14 for 224 / 16)
    raise CheckpointError(
        f"pos_embed has {num_positions} patch positions on an unknown grid; pass src_grid=(h, w)"
    )


def load_backbone(
    model: VisionTransformer,
    source: str | Path | Mapping[str, Any],
    which: Literal["teacher", "student"] = "teacher",
    src_grid: tuple[int, int] | None = None,
    strict: bool = False,
) -> LoadReport:
    """Load backbone weights into `model` from a file or an in-memory checkpoint / state dict.

    Args:
        model: our ViT.
        source: checkpoint path, or what torch.load returned, or a state dict.
        which: `teacher` or `student` for checkpoints holding both.
        src_grid: (h, w) of the checkpoint's position grid when it is neither the model's nor square.
        strict: raise when anything but `masked_embed` is missing or anything is unexpected.
    """
    name = str(source) if isinstance(source, (str, Path)) else "state dict"
    obj = read_checkpoint_file(source) if isinstance(source, (str, Path)) else source
    state, skipped = extract_backbone_state(obj, which)
    report = LoadReport(skipped=sorted(skipped))

    own = model.state_dict()
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != own["pos_embed"].shape:
        if pos.ndim != 3 or pos.shape[-1] != own["pos_embed"].shape[-1]:
            raise CheckpointError(
                f"{name}: pos_embed {tuple(pos.shape)} does not fit the model's {tuple(own['pos_embed'].shape)}"
            )
        grid = _source_grid(pos.shape[1] - 1, model, src_grid)
        state["pos_embed"] = interpolate_pos_embed(pos, grid, model.pos_grid)
        report.resized.append(f"pos_embed {grid[0]}x{grid[1]} -> {model.pos_grid[0]}x{model.pos_grid[1]}")
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{name}: {key} has shape {tuple(value.shape)} in the checkpoint but {tuple(own[key].shape)} in the model"
            )

    result = nn.Module.load_state_dict(model, state, strict=False)
    report.missing = sorted(result.missing_keys)
    report.unexpected = sorted(result.unexpected_keys)
    report.loaded = sorted(k for k in state if k in own)
    if not report.loaded:
        raise CheckpointError(f"{name}: no backbone key matched the model (first keys: {sorted(state)[:5]})")
    if strict and (set(report.missing) - {"masked_embed"} or report.unexpected):
        raise CheckpointError(f"{name}: strict load failed: {report.summary()}")
    log.info("backbone from %s (%s): %s", name, which, report.summary())
    return report
