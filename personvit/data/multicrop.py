"""Geometric multi-crop: JPEG bytes -> 2 global + n local uint8 crops (random-resized-crop).

Only geometry happens here, in the loader workers: decode (optionally at reduced JPEG scale),
pick each view's box with torchvision's RandomResizedCrop rule, crop and resize (uint8 bicubic).
Everything photometric (flip, colour, blur, solarize, normalise) is deferred to batched tensor code
(`photometric.py`), which is where the CPU time of the classic pipeline went.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
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


def sample_box(rng: np.random.Generator, height: int, width: int, spec: CropSpec) -> tuple[int, int, int, int]:
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


def to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 [3, H, W] view (channels-last memory) of an RGB image, without a copy."""
    arr = np.asarray(img)
    if not arr.flags.writeable:  # PIL hands out a read-only buffer; torch wants to own a writable one
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1)


def crop_resize(img: torch.Tensor, box: tuple[int, int, int, int], orig_hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Crop `box` (original pixels) and resize to `size` (H, W): uint8 [3, H, W].

    Bicubic with antialiasing (PIL's filter, as torchvision's RandomResizedCrop on PIL images) on the
    uint8 tensor: torch's uint8 kernel is ~3-4x faster than PIL's resize here (benchmarks/loader.py).

    Args:
        img: uint8 [3, h, w], possibly decoded at reduced scale.
        box: (left, top, right, bottom) in original pixels.
        orig_hw: original (H, W), to map the box onto a reduced decode.
        size: output (H, W).
    """
    h, w = img.shape[1:]
    sy, sx = h / orig_hw[0], w / orig_hw[1]
    left, top = int(box[0] * sx), int(box[1] * sy)
    right, bottom = max(left + 1, round(box[2] * sx)), max(top + 1, round(box[3] * sy))
    crop = img[None, :, top:bottom, left:right]
    return F.interpolate(crop, size=size, mode="bicubic", antialias=True, align_corners=False)[0]


def multicrop(img: Image.Image, orig_hw: tuple[int, int], rng: np.random.Generator, specs: list[CropSpec]) -> list[torch.Tensor]:
    """One uint8 [3, H, W] crop per spec, boxes drawn from `rng` in spec order.

    Args:
        img: the decoded RGB image (possibly reduced by `decode`).
        orig_hw: its original (H, W).
        rng: the sample's crop generator.
        specs: view kinds, globals first.
    """
    x = to_tensor(img)
    return [crop_resize(x, sample_box(rng, orig_hw[0], orig_hw[1], s), orig_hw, s.size) for s in specs]
