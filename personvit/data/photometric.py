"""DINO/iBOT photometric augmentation, worker side: each sample's parameters, drawn per view.

Workers only *draw* each sample's parameters (from its own generator, so the stream does not
depend on worker count); the batch carries them (`collate.py`) and `device_augment.py` applies them
to whole batches on the trainer's device.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from personvit.config.data import PretrainDataConfig


@dataclass
class PhotometricParams:
    """Per-view, per-sample photometric parameters; every field has leading dims [V, B] (or [N]).

    Attributes:
        flip: horizontal flip.
        jitter: (brightness, contrast, saturation, hue) factors; identity (1, 1, 1, 0) when colour
            jitter is not applied.
        jitter_order: the order in which the 4 jitter ops apply (a permutation of 0..3).
        grayscale: convert to gray (after jitter).
        blur_sigma: Gaussian blur sigma; 0 = no blur.
        solarize: invert pixels >= 128/255.
    """

    flip: torch.Tensor
    jitter: torch.Tensor
    jitter_order: torch.Tensor
    grayscale: torch.Tensor
    blur_sigma: torch.Tensor
    solarize: torch.Tensor

    def map(self, fn) -> PhotometricParams:
        """A copy with `fn` applied to every tensor (indexing, `.to(device)`, pinning)."""
        return PhotometricParams(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})


def draw_photometric(rng: np.random.Generator, cfg: PretrainDataConfig) -> dict[str, np.ndarray]:
    """Draw one sample's parameters for all 2 + n_local views (fixed number of draws).

    Args:
        rng: the sample's colour generator (Stream.COLOR, epoch, position).
        cfg: data config (probabilities, strengths).
    Returns:
        numpy arrays with leading dim V, keyed like `PhotometricParams` fields.
    """
    v = cfg.n_views
    kind = np.minimum(np.arange(v), 2)  # 0: global 1, 1: global 2, 2: local
    flip = rng.random(v) < cfg.flip_p
    jitter_on = rng.random(v) < cfg.jitter_p
    lo_hi = [(max(0.0, 1 - s), 1 + s) for s in (cfg.brightness, cfg.contrast, cfg.saturation)] + [(-cfg.hue, cfg.hue)]
    factors = np.stack([rng.uniform(lo, hi, v) for lo, hi in lo_hi], axis=1)
    factors = np.where(jitter_on[:, None], factors, np.array([1.0, 1.0, 1.0, 0.0]))
    order = rng.permuted(np.tile(np.arange(4), (v, 1)), axis=1)
    gray = rng.random(v) < cfg.grayscale_p
    blur_on = rng.random(v) < np.asarray(cfg.blur_p)[kind]
    sigma = rng.uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], v)
    solarize = rng.random(v) < np.asarray(cfg.solarize_p)[kind]
    return {
        "flip": flip,
        "jitter": factors.astype(np.float32),
        "jitter_order": order.astype(np.int64),
        "grayscale": gray,
        "blur_sigma": np.where(blur_on, sigma, 0.0).astype(np.float32),
        "solarize": solarize,
    }
