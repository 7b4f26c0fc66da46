"""What the visualisations read: a backbone from a checkpoint, and samples from a shard folder.

The architecture comes from the run folder's `config.yaml` (next to `checkpoints/`): its `model` section,
read with the schema of the run (pretraining or fine-tuning) and built by personvit/models/build.py,
`data.img_size` (`data.global_size` for pretraining) and the input
normalisation `data.mean`/`data.std`. Command-line values override it; a checkpoint outside a run
folder needs them. Samples are read by key or by random index through the manifest, without reading
whole splits (a LUPerson split has millions of images).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from personvit.checkpoint import CheckpointError, resolve_checkpoint_path
from personvit.config.core import ConfigError, load_yaml_text
from personvit.data.shards import ShardError, ShardReader, index_tar, read_manifest
from personvit.models import VisionTransformer
from personvit.models.build import build_backbone, model_section
from personvit.models.loading import load_backbone, read_checkpoint_file
from personvit.rng import Stream, numpy_rng

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LoadedModel", "Sample", "load_model", "load_samples",
           "to_batch", "find_pairs"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_HEAD_PREFIXES = ("head.mlp.", "module.head.mlp.")


@dataclass
class LoadedModel:
    """A backbone ready for inference plus what the drawings need to know about it."""

    model: VisionTransformer
    step: int | None  # optimiser step of the checkpoint (names the output files)
    head_mlp: torch.nn.Module | None  # the projection head's MLP (pretraining checkpoints), else None
    img_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def step_tag(self) -> str:
        return f"step{self.step}" if self.step is not None else "stepNA"


@dataclass
class Sample:
    """One decoded shard sample."""

    key: str
    image: Image.Image
    pid: int | None = None
    camid: int | None = None


def _run_config(ckpt: Path) -> tuple[Path | None, dict[str, Any]]:
    """(path, mapping) of the run folder's `config.yaml` beside the checkpoint, or (None, {})."""
    for folder in (ckpt.parent, ckpt.parent.parent):
        path = folder / "config.yaml"
        if path.is_file():
            cfg = load_yaml_text(path.read_text()) or {}
            return path, (cfg if isinstance(cfg, dict) else {})
    return None, {}


def load_model(
    ckpt: str | Path,
    which: str = "teacher",
    arch: str | None = None,
    overrides: dict[str, int] | None = None,
    img_size: tuple[int, int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    random_weights: bool = False,
) -> LoadedModel:
    """Build the backbone described by the run's config (or the arguments) and load its weights.

    Args:
        ckpt: checkpoint file, checkpoint folder or run folder (its latest checkpoint).
        which: `teacher` or `student` for pretraining checkpoints.
        arch: ViT name overriding the config's `model.arch`.
        overrides: patch_size / embed_dim / depth / num_heads overriding the config's.
        img_size: (H, W) overriding the config's `data.img_size`.
        mean, std: input normalisation; default: the config's, else ImageNet's (pretraining).
        random_weights: keep the fresh initialisation (seeded by the caller's torch RNG) instead of
            loading the checkpoint's weights: the random-init baseline with the run's architecture.
    """
    path = resolve_checkpoint_path(ckpt)
    config_path, cfg = _run_config(path)
    data_cfg = cfg.get("data") or {}
    if not (arch or (cfg.get("model") or {}).get("arch")):
        raise CheckpointError(f"{path}: no config.yaml with model.arch beside it; pass --arch")
    try:
        section = model_section(cfg)
        changes = {"arch": arch} if arch else {}
        changes.update({k: int(v) for k, v in (overrides or {}).items() if v})  # 0/None = keep
        section = dataclasses.replace(section, **changes)
    except (ConfigError, ValueError) as e:
        raise CheckpointError(f"{config_path}: {e}") from None
    size = img_size or tuple(data_cfg.get("img_size") or data_cfg.get("global_size") or (256, 128))
    try:
        model = build_backbone(section, size, attn_backend="math")
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot build the model ({e})") from None
    payload = None if random_weights else read_checkpoint_file(path)
    if payload is not None:
        load_backbone(model, payload, which=which, strict=True)
    model.eval()
    step = payload.get("step") if isinstance(payload, dict) else None
    head = None if payload is None else _head_mlp(payload, which)
    return LoadedModel(model, int(step) if isinstance(step, int) else None, head,
                       (int(size[0]), int(size[1])),
                       tuple(mean or data_cfg.get("mean") or IMAGENET_MEAN),
                       tuple(std or data_cfg.get("std") or IMAGENET_STD))


def _head_mlp(payload: Any, which: str) -> torch.nn.Module | None:
    """The DINO/iBOT head's MLP (`head.mlp.{0,2,4}`: Linear, GELU, ...) rebuilt from its weight shapes."""
    state = payload.get("state", payload) if isinstance(payload, dict) else {}
    net = state.get(which) if isinstance(state, dict) else None
    if not isinstance(net, dict):
        return None
    weights = {}
    for key, value in net.items():
        for prefix in _HEAD_PREFIXES:
            if key.startswith(prefix):
                weights[key[len(prefix):]] = value
    idx = sorted({int(k.split(".")[0]) for k in weights if k.endswith(".weight") and weights[k].ndim == 2})
    if not idx:
        return None
    layers: list[torch.nn.Module] = []
    for n, i in enumerate(idx):
        w = weights[f"{i}.weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.load_state_dict({"weight": w, "bias": weights[f"{i}.bias"]})
        layers += [lin] if n == len(idx) - 1 else [lin, torch.nn.GELU()]
    return torch.nn.Sequential(*layers).eval()


def to_batch(images: list[Image.Image], lm: LoadedModel) -> tuple[torch.Tensor, list[Image.Image]]:
    """Resize (bicubic) and normalise images for the model; also return the resized RGB images."""
    h, w = lm.img_size
    resized = [im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC) for im in images]
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in resized])
    x = (arr - np.asarray(lm.mean, dtype=np.float32)) / np.asarray(lm.std, dtype=np.float32)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), resized


def _decode(key: str, jpg: bytes | None, meta: bytes | None) -> Sample:
    if jpg is None:
        raise ShardError(f"sample {key} has no jpg member")
    image = Image.open(io.BytesIO(jpg))
    image.load()
    pid = camid = None
    if meta:
        info = json.loads(meta)
        pid, camid = info.get("pid"), info.get("camid")
    return Sample(key, image.convert("RGB"), pid, camid)


def load_samples(
    root: str | Path, split: str, keys: list[str] | None = None, count: int = 4, seed: int = 0
) -> list[Sample]:
    """Read samples of a split by key (in the order given) or `count` random ones.

    Args:
        root: shard folder with `manifest.json`.
        split: split name (`train`, `query`, `gallery`).
        keys: sample keys to read; all must exist.
        count: number of random samples when no keys are given.
        seed: seed of the random choice.
    """
    shards = read_manifest(root, split)
    images, metas = ShardReader(shards, "jpg"), ShardReader(shards, "json")
    try:
        if keys:
            wanted, where = set(keys), {}
            for s, info in enumerate(shards):
                for i, ref in enumerate(index_tar(info.path)):
                    if ref.key in wanted:
                        where[ref.key] = (s, i)
                if len(where) == len(wanted):
                    break
            missing = [k for k in keys if k not in where]
            if missing:
                raise ShardError(f"{root}: split '{split}' has no sample {missing[0]!r} ({len(missing)} keys missing)")
            picks = [where[k] for k in keys]
        else:
            counts = np.array([s.num_samples for s in shards])
            total = int(counts.sum())
            chosen = numpy_rng(seed, Stream.ORDER).choice(total, size=min(count, total), replace=False)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            picks = [(int(s), int(g - starts[s])) for g in np.sort(chosen)
                     for s in [int(np.searchsorted(starts, g, side="right") - 1)]]
        out = []
        for s, i in picks:
            key, jpg = images.read(s, i)
            out.append(_decode(key, jpg, metas.read(s, i)[1]))
        return out
    finally:
        images.close()
        metas.close()


def find_pairs(root: str | Path, split: str, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` random (key, key) pairs of the same identity, from different cameras when possible.

    Reads only the json members of the split (pid/camid), never the images. Distractor and junk
    identities (pid <= 0) are not used.
    """
    shards = read_manifest(root, split)
    reader = ShardReader(shards, "json")
    by_pid: dict[int, list[tuple[str, int]]] = {}
    try:
        for s, info in enumerate(shards):
            for i in range(info.num_samples):
                key, meta = reader.read(s, i)
                info_ = json.loads(meta) if meta else {}
                if isinstance(info_.get("pid"), int) and info_["pid"] > 0:
                    by_pid.setdefault(info_["pid"], []).append((key, int(info_.get("camid", 0))))
    finally:
        reader.close()
    pids = sorted(p for p, items in by_pid.items() if len(items) >= 2)
    if not pids:
        raise ShardError(f"{root}: split '{split}' has no identity with two images; pass --keys A B")
    rng = numpy_rng(seed, Stream.ORDER)
    pairs = []
    for pid in rng.choice(pids, size=min(count, len(pids)), replace=False):
        items = by_pid[int(pid)]
        a = items[int(rng.integers(len(items)))]
        others = [it for it in items if it[1] != a[1]] or [it for it in items if it[0] != a[0]]
        pairs.append((a[0], others[int(rng.integers(len(others)))][0]))
    return pairs
