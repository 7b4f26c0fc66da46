"""BoT train/eval transforms: keyed determinism, geometry, normalisation, random erasing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from personvit.data.reid_transforms import EvalTransform, TrainTransform, erase_box
from personvit.rng import numpy_rng


def _image(seed: int = 0, size_wh=(40, 90)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8))


def test_same_key_same_tensor_other_keys_differ() -> None:
    t = TrainTransform((64, 32), seed=3, pad=4)
    img = _image()
    a = t(img, 1, 10)
    assert torch.equal(a, t(img, 1, 10))
    assert torch.equal(a, TrainTransform((64, 32), seed=3, pad=4)(img, 1, 10)), "no hidden state between instances"
    others = [t(img, 1, 11), t(img, 2, 10), TrainTransform((64, 32), seed=4, pad=4)(img, 1, 10)]
    assert all(not torch.equal(a, o) for o in others)


def test_eval_transform_is_bicubic_resize_and_normalise() -> None:
    img = _image(1)
    x = EvalTransform((64, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(img)
    ref = np.asarray(img.resize((32, 64), Image.BICUBIC), dtype=np.float32) / 255.0
    assert x.shape == (3, 64, 32)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), (ref - 0.5) / 0.5, atol=1e-6)


def test_flip_and_no_pad_no_erase_reduce_to_mirrored_eval() -> None:
    img = _image(2)
    flipped = TrainTransform((64, 32), seed=0, flip_p=1.0, pad=0, erase_p=0.0)(img, 0, 0)
    plain = EvalTransform((64, 32))(img)
    assert torch.equal(flipped, plain.flip(2))
    kept = TrainTransform((64, 32), seed=0, flip_p=0.0, pad=0, erase_p=0.0)(img, 0, 0)
    assert torch.equal(kept, plain)


def test_pad_and_crop_shift_the_image_by_at_most_pad() -> None:
    img = _image(3, (32, 64))  # already the output size: no resampling
    t = TrainTransform((64, 32), seed=0, flip_p=0.0, pad=4, erase_p=0.0)
    base = np.asarray(img, dtype=np.uint8)
    shifts = set()
    for pos in range(40):
        out = t.geometry(img, 0, pos)
        assert out.shape == (64, 32, 3)
        padded = np.pad(base, ((4, 4), (4, 4), (0, 0)))
        found = [(dy, dx) for dy in range(9) for dx in range(9) if np.array_equal(padded[dy:dy + 64, dx:dx + 32], out)]
        assert found, "output must be a 64x32 window of the zero-padded image"
        shifts.add(found[0])
    assert len(shifts) > 10, "crop offsets should vary with the position"


def test_erasing_rate_area_and_noise() -> None:
    img = Image.new("RGB", (32, 64), (128, 128, 128))
    t = TrainTransform((64, 32), seed=5, flip_p=0.0, pad=0, erase_p=0.5)
    base = EvalTransform((64, 32))(img)
    erased, fractions = 0, []
    for pos in range(400):
        changed = (t(img, 0, pos) != base).any(0)
        if changed.any():
            erased += 1
            fractions.append(changed.float().mean().item())
    assert 0.4 < erased / 400 < 0.6
    assert min(fractions) >= 0.01 and max(fractions) <= 1 / 3 + 0.05
    noisy = t(img, 0, next(p for p in range(400) if (t(img, 0, p) != base).any()))
    region = noisy[(noisy != base)]
    assert abs(region.mean().item()) < 0.3 and 0.7 < region.std().item() < 1.3, "per-pixel N(0, 1) noise"


@pytest.mark.parametrize("h, w", [(64, 32), (256, 128), (8, 4)])
def test_erase_box_fits_and_respects_ranges(h: int, w: int) -> None:
    for i in range(200):
        box = erase_box(numpy_rng(0, 6, 0, i), h, w, (0.02, 1 / 3), (0.3, 3.3))
        if box is None:
            continue
        top, left, eh, ew = box
        assert 0 <= top and top + eh <= h and 0 <= left and left + ew <= w and eh < h and ew < w
        # Rounding to whole pixels can move area and aspect a little off their ranges on tiny images.
        if min(h, w) >= 32:
            assert 0.02 * 0.7 <= eh * ew / (h * w) <= 1 / 3 * 1.3
            assert math.log(0.3) - 0.4 <= math.log(eh / ew) <= math.log(3.3) + 0.4


def test_from_config_is_the_data_sections_transform():
    from personvit.config.finetune import ReIDDataConfig

    data = ReIDDataConfig(shards="x", img_size=(64, 32), pad=4, erase_p=0.25, flip_p=0.0)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 40, 3), dtype=np.uint8))
    ours = TrainTransform.from_config(data, seed=3)(img, 1, 10)
    want = TrainTransform(data.img_size, 3, data.flip_p, data.pad, data.erase_p, data.erase_area, data.erase_aspect,
                          data.mean, data.std)(img, 1, 10)
    assert torch.equal(ours, want)
    assert not torch.equal(ours, TrainTransform.from_config(data, seed=4)(img, 1, 10))
