"""Labeled ReID shard sets (train / query / gallery) read into memory, and their map-style datasets.

ReID benchmarks are small (Market-1501's train split is ~13k JPEGs, ~70 MB; MSMT17's gallery ~82k), so
a split is read once, sequentially, into a list of JPEG bytes plus numpy arrays of pid / camid. That
makes any sample addressable by index, which the PK sampler needs, and costs one pass over the tars.

A sample is what `shard-tools pack` writes (DESIGN.md): `<key>.jpg` (source JPEG bytes) and
`<key>.json` ({pid, camid, dataset, path}). Samples without both members, with unreadable JSON or an
image PIL cannot open are skipped, counted and logged with the first culprit named.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from personvit.data.shards import ShardError, read_manifest
from personvit.data.tar_reader import TarReadError, read_samples
from personvit.runlog import get_logger

log = get_logger(__name__)


@dataclass
class ReIDSplit:
    """One split held in memory.

    Attributes:
        name: split name (`train`, `query`, `gallery`).
        images: JPEG bytes per sample.
        pids: [N] int64 person ids as packed (Market: 0 = distractor, kept in galleries).
        camids: [N] int64 0-based camera ids.
        keys: sample keys (unique inside the shard set).
        paths: image paths relative to the source dataset root.
        skipped: samples dropped as unreadable.
    """

    name: str
    images: list[bytes]
    pids: np.ndarray
    camids: np.ndarray
    keys: list[str]
    paths: list[str]
    skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_pids(self) -> int:
        return int(np.unique(self.pids).size)


def _parse_meta(raw: bytes) -> tuple[int, int, str]:
    meta = json.loads(raw)
    pid, camid = meta["pid"], meta["camid"]
    if isinstance(pid, bool) or isinstance(camid, bool) or not isinstance(pid, int) or not isinstance(camid, int):
        raise ValueError(f"pid/camid must be integers, got {pid!r}/{camid!r}")
    return pid, camid, str(meta.get("path", ""))


def _check_image(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as im:
        im.verify()  # header + structure check, no full decode


def read_reid_split(root: str | Path, split: str, check_images: bool = True) -> ReIDSplit:
    """Read every sample of one split of a labeled shard set.

    Args:
        root: shard folder with `manifest.json`.
        split: split name in the manifest.
        check_images: open each JPEG's header so a corrupt file is skipped here, not mid-training.
    Raises:
        ShardError: missing manifest/split/shard, a shard whose sample count differs from the
            manifest, or a split left empty after skips.
    """
    shards = read_manifest(root, split)
    images: list[bytes] = []
    pids: list[int] = []
    camids: list[int] = []
    keys: list[str] = []
    paths: list[str] = []
    reasons: dict[str, int] = {}
    first_bad: str | None = None
    for info in shards:
        try:
            groups = read_samples(info.path)
        except TarReadError as e:
            raise ShardError(str(e)) from None
        if len(groups) != info.num_samples:
            raise ShardError(f"{info.path}: manifest lists {info.num_samples} samples, the tar holds {len(groups)}")
        for key, members in groups.items():
            reason = None
            if "jpg" not in members or "json" not in members:
                reason = "missing jpg or json member"
            else:
                try:
                    pid, camid, rel = _parse_meta(members["json"])
                    if check_images:
                        _check_image(members["jpg"])
                except (ValueError, KeyError, TypeError):
                    reason = "bad json metadata"
                except (UnidentifiedImageError, OSError, SyntaxError):
                    reason = "unreadable image"
            if reason is not None:
                reasons[reason] = reasons.get(reason, 0) + 1
                first_bad = first_bad or f"{info.name}:{key} ({reason})"
                continue
            images.append(members["jpg"])
            pids.append(pid)
            camids.append(camid)
            keys.append(key)
            paths.append(rel)
    skipped = sum(reasons.values())
    if skipped:
        log.warning("%s/%s: skipped %d unreadable samples %s, first: %s", root, split, skipped, reasons, first_bad)
    if not images:
        raise ShardError(f"{root}: split '{split}' has no readable samples")
    return ReIDSplit(split, images, np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64),
                     keys, paths, skipped, reasons)


def relabel(pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map person ids to contiguous class labels 0..C-1 in sorted-pid order.

    Args:
        pids: [N] person ids.
    Returns:
        (labels [N] int64, the sorted unique pids [C]) so that `unique[labels] == pids`.
    """
    unique, labels = np.unique(np.asarray(pids), return_inverse=True)
    return labels.astype(np.int64), unique


def decode_rgb(data: bytes, key: str) -> Image.Image:
    """Decode JPEG bytes to an RGB image; a failure names the sample."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"sample {key}: cannot decode image ({e})") from None


class ReIDTrainDataset(torch.utils.data.Dataset):
    """Training samples addressed by `(epoch, position, index)` so augmentations are keyed, not stateful.

    Args:
        split: the train split.
        labels: [N] class labels (see `relabel`).
        transform: `f(image, epoch, position) -> [3, H, W] float tensor`.
    """

    def __init__(self, split: ReIDSplit, labels: np.ndarray, transform: Callable[[Image.Image, int, int], torch.Tensor]):
        if len(labels) != len(split):
            raise ValueError(f"{len(labels)} labels for {len(split)} samples")
        self.split, self.labels, self.transform = split, labels, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int, int]:
        epoch, position, index = item
        img = decode_rgb(self.split.images[index], self.split.keys[index])
        return self.transform(img, epoch, position), int(self.labels[index]), int(self.split.camids[index])


class ReIDTestDataset(torch.utils.data.Dataset):
    """Query / gallery samples in split order.

    Args:
        split: the split.
        transform: `f(image) -> [3, H, W] float tensor`.
    """

    def __init__(self, split: ReIDSplit, transform: Callable[[Image.Image], torch.Tensor]):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(decode_rgb(self.split.images[index], self.split.keys[index])), index
