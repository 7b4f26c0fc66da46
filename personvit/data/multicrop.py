"""Geometric multi-crop: JPEG bytes -> 2 global + n local uint8 crops (random-resized-crop).

Only geometry happens here, in the loader workers: decode (optionally at reduced JPEG scale),
pick each view's box with torchvision's RandomResizedCrop rule, crop and resize in one PIL call.
Everything photometric (flip, colour, blur, solarize, normalise) is deferred to batched tensor code
(`photometric.py`), which is where the CPU time of the classic pipeline went.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CropSpec:
    """One kind of view.

    Attributes:
        size: output (H, W).
        scale: area fraction range of the source box.
        aspect: box aspect range as width / height (sampled log-uniformly).
    """

    size: tuple[int, int]
    scale: tuple[float, float]
    aspect: tuple[float, float]


def sample_box(rng: np.random.Generator, height: int, width: int, spec: CropSpec) -> tuple[float, float, float, float]:
    """A RandomResizedCrop box `(left, top, right, bottom)` in source pixels.

    torchvision's rule: up to 10 tries of (area fraction, log-uniform aspect) whose box fits; else
    a centre crop at the closest allowed aspect.

    Args:
        rng: the sample's crop generator.
        height, width: source image size.
        spec: the view kind.
    """
    area = height * width
    log_lo, log_hi = math.log(spec.aspect[0]), math.log(spec.aspect[1])
    for _ in range(10):
        target = area * rng.uniform(spec.scale[0], spec.scale[1])
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < spec.aspect[0]:
        w, h = width, int(round(width / spec.aspect[0]))
    elif in_ratio > spec.aspect[1]:
        h, w = height, int(round(height * spec.aspect[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def draft_size(height: int, width: int, specs: list[CropSpec]) -> tuple[int, int] | None:
    """Smallest (W, H) the decoder may reduce to without any view's smallest box losing resolution.

    A box of area fraction `s` must keep at least `out_h * out_w` pixels, so the image needs
    `out_h * out_w / s` pixels; None when no reduction is possible.
    """
    need = max(s.size[0] * s.size[1] / s.scale[0] for s in specs)
    f = math.sqrt(need / (height * width))
    if f >= 0.5:  # JPEG reduces by 2, 4 or 8 only
        return None
    return math.ceil(width * f), math.ceil(height * f)


def decode(data: bytes, specs: list[CropSpec], allow_draft: bool = True) -> tuple[Image.Image, tuple[int, int]]:
    """Decode JPEG (or any PIL format) bytes to RGB.

    Returns:
        The image and the *original* (H, W): boxes are drawn in original pixels so that the random
        draws do not depend on whether the decoder reduced the image.
    Raises:
        OSError / ValueError / PIL.UnidentifiedImageError for corrupt data.
    """
    img = Image.open(io.BytesIO(data))
    orig_hw = (img.height, img.width)
    if allow_draft and img.format == "JPEG":
        req = draft_size(img.height, img.width, specs)
        if req is not None:
            img.draft("RGB", req)
    img = img.convert("RGB")  # forces the full decode: truncated data raises here
    return img, orig_hw


def crop_resize(img: Image.Image, box: tuple[float, float, float, float], orig_hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Crop `box` (original pixels) and resize to `size` (H, W) bicubically: uint8 [H, W, 3]."""
    sy, sx = img.height / orig_hw[0], img.width / orig_hw[1]
    left, top, right, bottom = box
    out = img.resize((size[1], size[0]), Image.BICUBIC, box=(left * sx, top * sy, right * sx, bottom * sy))
    return np.asarray(out)


def multicrop(img: Image.Image, orig_hw: tuple[int, int], rng: np.random.Generator, specs: list[CropSpec]) -> list[np.ndarray]:
    """One uint8 [H, W, 3] crop per spec, boxes drawn from `rng` in spec order."""
    return [crop_resize(img, sample_box(rng, orig_hw[0], orig_hw[1], s), orig_hw, s.size) for s in specs]
