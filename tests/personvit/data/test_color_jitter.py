"""Exact colour jitter: per-image factors and order, equal to torchvision's ops applied image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from personvit.config.data import PretrainDataConfig
from personvit.data.color_jitter import color_jitter, hsv_to_rgb, rgb_to_hsv
from personvit.data.device_augment import apply_photometric
from personvit.data.photometric import PhotometricParams, draw_photometric

TV_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _torchvision_chain(im: torch.Tensor, factors, order) -> torch.Tensor:
    for op in order.tolist():
        if factors[op] != (1.0, 1.0, 1.0, 0.0)[op]:
            im = TV_OPS[op](im, float(factors[op]))
    return im


def test_hsv_round_trip_with_gray_pixels_and_ties():
    x = torch.rand(3, 3, 10, 6, generator=torch.Generator().manual_seed(0))
    x[0, :, :2] = 0.5  # gray: every channel equal
    x[1, 0, :, :3] = x[1, 1, :, :3]  # red == green ties
    x[2, 1, 2:4] = x[2, 2, 2:4]  # green == blue ties
    x[2, :, 5] = 0.0  # black
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=2e-6, rtol=0)
    h = rgb_to_hsv(x)
    assert (h[0, 0, :2] == 0).all() and (h[0, 1, :2] == 0).all()  # gray: hue and saturation 0
    assert h.min() >= 0 and h.max() <= 1


@pytest.mark.parametrize("hue", [0.1, -0.07, 0.5, -0.5, 0.33])
def test_hue_equals_torchvision(hue):
    x = torch.rand(4, 3, 12, 8, generator=torch.Generator().manual_seed(1))
    ours = color_jitter(x, torch.tensor([[1.0, 1.0, 1.0, hue]]).repeat(4, 1), torch.arange(4).roll(1).repeat(4, 1))
    torch.testing.assert_close(ours, torch.stack([TF.adjust_hue(im, hue) for im in x]), atol=3e-6, rtol=0)


def test_every_image_follows_its_own_factors_and_order_with_clamping():
    # Strong factors so that clamping after each op matters (the composed matrix would differ here).
    g = torch.Generator().manual_seed(2)
    n = 24
    x = torch.rand(n, 3, 16, 8, generator=g)
    jitter = torch.stack([torch.empty(n).uniform_(0.2, 1.9, generator=g), torch.empty(n).uniform_(0.2, 1.9, generator=g),
                          torch.empty(n).uniform_(0.0, 2.0, generator=g), torch.empty(n).uniform_(-0.5, 0.5, generator=g)], 1)
    jitter[::5] = torch.tensor([1.0, 1.0, 1.0, 0.0])  # untouched images
    jitter[1::7, 3] = 0.0  # hue off, others on
    order = torch.stack([torch.randperm(4, generator=g) for _ in range(n)])
    ours = color_jitter(x, jitter, order)
    ref = torch.stack([_torchvision_chain(x[i], jitter[i].tolist(), order[i]) for i in range(n)])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert torch.equal(ours[::5], x[::5])  # identity factors: bit-for-bit untouched
    assert not torch.equal(ours, color_jitter(x, jitter, order.flip(1)))  # the order matters


def test_apply_photometric_exact_matches_torchvision_and_differs_from_matrix_only_in_jitter():
    cfg = PretrainDataConfig(shards="unused", n_local=2, hue=0.5, saturation=1.0)
    rows = [draw_photometric(np.random.default_rng(i), cfg) for i in range(16)]
    p = PhotometricParams(**{k: torch.from_numpy(np.stack([r[k][2] for r in rows])) for k in rows[0]})  # local views
    p.blur_sigma.zero_()
    p.solarize.zero_()
    u8 = (torch.rand(16, 3, 16, 8, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    exact = apply_photometric(u8, p, max_sigma=2.0, normalize=False)
    x = u8.float() / 255
    ref = []
    for i in range(16):
        im = TF.horizontal_flip(x[i]) if p.flip[i] else x[i]
        im = _torchvision_chain(im, p.jitter[i].tolist(), p.jitter_order[i])
        ref.append(TF.rgb_to_grayscale(im, num_output_channels=3) if p.grayscale[i] else im)
    torch.testing.assert_close(exact, torch.stack(ref), atol=1e-5, rtol=0)
    matrix = apply_photometric(u8, p, max_sigma=2.0, normalize=False, jitter_impl="matrix")
    plain = (p.jitter == torch.tensor([1.0, 1.0, 1.0, 0.0])).all(1)
    assert plain.any() and (~plain).any()
    torch.testing.assert_close(exact[plain], matrix[plain], atol=1e-6, rtol=0)  # no jitter: same path
    assert (exact[~plain] - matrix[~plain]).abs().amax() > 1e-3  # HSV hue + per-op clamps vs YIQ matrix


def test_unknown_jitter_impl_is_refused():
    with pytest.raises(ValueError, match="jitter_impl"):
        PretrainDataConfig(shards="unused", jitter_impl="fast")
    p = PhotometricParams(flip=torch.zeros(1, dtype=torch.bool), jitter=torch.tensor([[1.0, 1.0, 1.0, 0.0]]),
                          jitter_order=torch.arange(4)[None], grayscale=torch.zeros(1, dtype=torch.bool),
                          blur_sigma=torch.zeros(1), solarize=torch.zeros(1, dtype=torch.bool))
    with pytest.raises(ValueError, match="jitter_impl"):
        apply_photometric(torch.zeros(1, 3, 8, 4, dtype=torch.uint8), p, 2.0, jitter_impl="fast")
