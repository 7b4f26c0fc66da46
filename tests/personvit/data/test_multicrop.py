"""Geometric multi-crop: RandomResizedCrop boxes, reduced-scale JPEG decode, uint8 crops."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from personvit.data.multicrop import (
    CropSpec,
    crop_resize,
    decode,
    draft_size,
    multicrop,
    sample_box,
    to_tensor,
)

GLOBAL = CropSpec((256, 128), (0.4, 1.0), (3 / 8, 2 / 3))
LOCAL = CropSpec((96, 64), (0.1, 0.8), (3 / 8, 2 / 3))


def _jpeg(h: int, w: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    # Smooth content (a gradient plus a few blocks): reduced-scale decoding must keep it recognisable.
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([255 * yy / h, 255 * xx / w, np.full((h, w), 128.0)], -1)
    for _ in range(4):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y : y + h // 4, x : x + w // 4] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("spec", [GLOBAL, LOCAL])
def test_boxes_respect_scale_and_aspect(spec):
    h, w = 160, 64
    for i in range(500):
        left, top, right, bottom = sample_box(np.random.default_rng(i), h, w, spec)
        bw, bh = right - left, bottom - top
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        # Rounding the box to whole pixels moves area and aspect by at most about one pixel.
        assert spec.scale[0] * h * w - (bw + bh) <= bw * bh <= spec.scale[1] * h * w + (bw + bh)
        assert spec.aspect[0] * (1 - 2 / bh) - 1 / bh <= bw / bh <= spec.aspect[1] * (1 + 2 / bh) + 1 / bh


def test_box_falls_back_to_a_centre_crop_at_the_closest_aspect():
    # A wide 40x400 image cannot hold a person-shaped box of 40% area: centre crop, aspect clamped to 2/3.
    left, top, right, bottom = sample_box(np.random.default_rng(0), 40, 400, GLOBAL)
    assert (top, bottom) == (0, 40) and right - left == round(40 * 2 / 3) and left == (400 - 27) // 2


def test_boxes_are_a_function_of_the_generator_only():
    boxes = [sample_box(np.random.default_rng(7), 150, 60, LOCAL) for _ in range(3)]
    assert boxes[0] == boxes[1] == boxes[2]
    assert sample_box(np.random.default_rng(8), 150, 60, LOCAL) != boxes[0]


def test_multicrop_outputs_uint8_views_in_spec_order_deterministically():
    img, hw = decode(_jpeg(150, 60), [GLOBAL, LOCAL])
    specs = [GLOBAL, GLOBAL, LOCAL, LOCAL, LOCAL]
    a = multicrop(img, hw, np.random.default_rng(3), specs)
    b = multicrop(img, hw, np.random.default_rng(3), specs)
    assert [tuple(x.shape) for x in a] == [(3, 256, 128)] * 2 + [(3, 96, 64)] * 3
    assert all(x.dtype == torch.uint8 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("box, size", [((5, 12, 50, 130), (256, 128)), ((0, 0, 60, 150), (96, 64)), ((20, 30, 41, 70), (96, 64))])
def test_crop_resize_matches_pil_bicubic(box, size):
    img, hw = decode(_jpeg(150, 60), [GLOBAL])
    ours = crop_resize(to_tensor(img), box, hw, size).permute(1, 2, 0).numpy().astype(float)
    pil = np.asarray(img.resize((size[1], size[0]), Image.BICUBIC, box=box)).astype(float)
    assert ours.shape == pil.shape and np.abs(ours - pil).mean() < 1.0 and np.abs(ours - pil).max() <= 12


def test_draft_decode_reduces_large_jpegs_only_and_keeps_the_crops():
    assert draft_size(150, 60, [GLOBAL, LOCAL]) is None  # typical person crop: full decode
    need = max(256 * 128 / 0.4, 96 * 64 / 0.1)
    req = draft_size(1600, 800, [GLOBAL, LOCAL])
    assert req is not None and req[0] * req[1] >= need * 0.99 and req[0] / req[1] == pytest.approx(0.5, rel=0.01)

    data = _jpeg(1600, 800)
    full, hw_full = decode(data, [GLOBAL, LOCAL], allow_draft=False)
    small, hw_small = decode(data, [GLOBAL, LOCAL], allow_draft=True)
    assert hw_full == hw_small == (1600, 800)
    assert full.size == (800, 1600) and small.size[0] < 800 and small.size[0] * small.size[1] >= need * 0.99
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    for spec in (GLOBAL, LOCAL):
        box_a, box_b = sample_box(rng_a, 1600, 800, spec), sample_box(rng_b, 1600, 800, spec)
        assert box_a == box_b  # boxes are drawn in original pixels whatever the decoder did
        a = crop_resize(to_tensor(full), box_a, hw_full, spec.size).float()
        b = crop_resize(to_tensor(small), box_b, hw_small, spec.size).float()
        assert (a - b).abs().mean() < 4.0  # same view, slightly different resampling


@pytest.mark.parametrize("data", [b"", b"not a jpeg", _jpeg(120, 60)[:400]])
def test_corrupt_bytes_raise_on_decode(data):
    with pytest.raises((OSError, ValueError, SyntaxError)):
        decode(data, [GLOBAL])


def test_decode_converts_gray_and_rgba_to_rgb():
    for mode in ("L", "RGBA"):
        buf = io.BytesIO()
        Image.new(mode, (30, 70)).save(buf, format="PNG")
        img, hw = decode(buf.getvalue(), [GLOBAL])
        assert img.mode == "RGB" and hw == (70, 30)
