"""Fine-tuning and test transforms of the BoT recipe (SPEC.md section 7), keyed for exact resume.

Train: resize (bicubic) -> horizontal flip -> zero pad -> random crop back -> normalise -> random
erasing with per-pixel N(0, 1) noise (timm's `RandomErasing(mode="pixel")`, as the authors use).
Every random draw comes from `personvit.rng` keyed by (seed, epoch, position in the epoch), so the
augmentation of a sample does not depend on worker count, worker order or what ran before a resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from personvit.rng import Stream, numpy_rng

if TYPE_CHECKING:
    from personvit.config.finetune import ReIDDataConfig

_ERASE_ATTEMPTS = 10


def to_normalized_tensor(img: Image.Image, size_hw: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Bicubic resize to (H, W) and normalise: [3, H, W] float32.

    Args:
        img: RGB image.
        size_hw: output (H, W).
        mean, std: per-channel normalisation of [0, 1] values.
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if img.size != (w, h):
        img = img.resize((w, h), Image.BICUBIC)
    return normalize(np.asarray(img, dtype=np.uint8), mean, std)


def normalize(arr: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[H, W, 3] uint8 -> [3, H, W] float32, (x / 255 - mean) / std."""
    # np.array copies: PIL arrays are read-only and the erasing writes in place.
    x = torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(m).div_(s)


def erase_box(rng: np.random.Generator, h: int, w: int, area: Sequence[float], aspect: Sequence[float]) -> tuple[int, int, int, int] | None:
    """A random-erasing box (top, left, height, width), or None when 10 attempts do not fit.

    Args:
        rng: the generator of this sample's erasing draws.
        h, w: image size.
        area: (min, max) erased fraction of the image area.
        aspect: (min, max) box height / width, drawn log-uniformly.
    """
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(_ERASE_ATTEMPTS):
        target = rng.uniform(area[0], area[1]) * h * w
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        eh, ew = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < eh < h and 0 < ew < w:
            return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
    return None


class TrainTransform:
    """Augment one training image; `__call__(img, epoch, position)` is a pure function of its inputs.

    Args:
        size_hw: output (H, W).
        seed: run seed.
        flip_p: horizontal flip probability.
        pad: zero padding before the random crop.
        erase_p: random erasing probability.
        erase_area: erased area fraction range.
        erase_aspect: erased box aspect range.
        mean, std: normalisation.
    """

    def __init__(self, size_hw: Sequence[int], seed: int, flip_p: float = 0.5, pad: int = 10, erase_p: float = 0.5,
                 erase_area: Sequence[float] = (0.02, 1 / 3), erase_aspect: Sequence[float] = (0.3, 3.3),
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)):
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.seed, self.flip_p, self.pad = seed, flip_p, pad
        self.erase_p, self.erase_area, self.erase_aspect = erase_p, tuple(erase_area), tuple(erase_aspect)
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def from_config(cls, data: ReIDDataConfig, seed: int) -> TrainTransform:
        """The training augmentation of a fine-tuning run's `data` section (validated there)."""
        return cls(data.img_size, seed, data.flip_p, data.pad, data.erase_p, data.erase_area, data.erase_aspect,
                   data.mean, data.std)

    def geometry(self, img: Image.Image, epoch: int, position: int) -> np.ndarray:
        """Resize, flip, pad and crop: [H, W, 3] uint8."""
        h, w = self.size_hw
        rng = numpy_rng(self.seed, Stream.CROP, epoch, position)
        if img.size != (w, h):
            img = img.resize((w, h), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8)
        if rng.random() < self.flip_p:
            arr = arr[:, ::-1]
        if self.pad:
            p = self.pad
            arr = np.pad(arr, ((p, p), (p, p), (0, 0)))
            top, left = int(rng.integers(0, 2 * p + 1)), int(rng.integers(0, 2 * p + 1))
            arr = arr[top:top + h, left:left + w]
        return arr

    def erase(self, x: torch.Tensor, epoch: int, position: int) -> torch.Tensor:
        """Random erasing in place on a normalised [3, H, W] tensor."""
        rng = numpy_rng(self.seed, Stream.ERASE, epoch, position)
        if rng.random() >= self.erase_p:
            return x
        box = erase_box(rng, x.shape[1], x.shape[2], self.erase_area, self.erase_aspect)
        if box is not None:
            top, left, eh, ew = box
            noise = rng.standard_normal((x.shape[0], eh, ew), dtype=np.float32)
            x[:, top:top + eh, left:left + ew] = torch.from_numpy(noise)
        return x

    def __call__(self, img: Image.Image, epoch: int, position: int) -> torch.Tensor:
        x = normalize(self.geometry(img, epoch, position), self.mean, self.std)
        return self.erase(x, epoch, position)


class EvalTransform:
    """Resize (bicubic) and normalise.

    Args:
        size_hw: output (H, W).
        mean, std: normalisation.
    """

    def __init__(self, size_hw: Sequence[int], mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)):
        self.size_hw, self.mean, self.std = tuple(size_hw), tuple(mean), tuple(std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_normalized_tensor(img, self.size_hw, self.mean, self.std)
