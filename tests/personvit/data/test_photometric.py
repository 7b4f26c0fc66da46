"""Drawing the photometric parameters (personvit/data/photometric.py): one row per view kind, as the recipe says."""

from __future__ import annotations

import numpy as np

from personvit.config.data import PretrainDataConfig
from personvit.data.photometric import draw_photometric


def test_drawn_parameters_follow_the_recipe_per_view_kind():
    cfg = PretrainDataConfig(shards="unused")
    draws = [draw_photometric(np.random.default_rng(i), cfg) for i in range(3000)]
    assert all(np.array_equal(a, b) for a, b in zip(draws[7].values(), draw_photometric(np.random.default_rng(7), cfg).values()))
    stack = {k: np.stack([d[k] for d in draws]) for k in draws[0]}  # [n, V, ...]
    blur = stack["blur_sigma"] > 0
    assert blur[:, 0].all() and abs(blur[:, 1].mean() - 0.1) < 0.03 and abs(blur[:, 2:].mean() - 0.5) < 0.03
    sol = stack["solarize"]
    assert not sol[:, 0].any() and not sol[:, 2:].any() and abs(sol[:, 1].mean() - 0.2) < 0.03
    assert abs(stack["flip"].mean() - 0.5) < 0.02 and abs(stack["grayscale"].mean() - 0.2) < 0.02
    identity = (stack["jitter"] == np.array([1, 1, 1, 0], np.float32)).all(-1)
    assert abs(identity.mean() - 0.2) < 0.02
    j = stack["jitter"][~identity]
    assert j[:, 0].min() >= 0.6 and j[:, 0].max() <= 1.4 and j[:, 2].min() >= 0.8 and np.abs(j[:, 3]).max() <= 0.1
    assert (np.sort(stack["jitter_order"], -1) == np.arange(4)).all()
    assert (stack["blur_sigma"][blur] >= 0.1).all() and (stack["blur_sigma"][blur] <= 2.0).all()
