"""Person-vs-scene triplets: does a feature follow the person or the background?

Each triplet is (anchor, the anchor's person in another scene, another person in the anchor's
scene), all under one image's lighting. A feature that identifies people puts the second image
nearer the anchor; one that matches backgrounds puts the third nearer. Rendered by the synthetic
pedestrian renderer with the unlabeled images' per-image scenes (`sample_scene`), from their own
seed keys, so no triplet image is a training image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from shard_tools.synth.attributes import sample_identity, sample_scene
from shard_tools.synth.render import render

PAIRS = 6  # seed-sequence key, apart from dataset.py's IDENTITY..SCENE (1..5)


def person_scene_triplets(count: int, seed: int = 0) -> list[tuple[Image.Image, Image.Image, Image.Image]]:
    """`count` triplets (anchor, same person / other scene, other person / same scene), 128x64 RGB.

    Args:
        count: how many triplets.
        seed: everything is a function of it.
    """

    def rng(i: int, what: int) -> np.random.Generator:
        return np.random.default_rng([seed, PAIRS, i, what])

    out = []
    for i in range(count):
        person, other = sample_identity(rng(i, 0)), sample_identity(rng(i, 1))
        # no occluder: it would hide the person in one image of the pair and not in the other
        light = dataclasses.replace(sample_scene(rng(i, 2)), occlusion_p=0.0)
        anchor = render(person, light, rng(i, 3), scene_rng=rng(i, 4))
        same_person = render(person, light, rng(i, 5), scene_rng=rng(i, 6))
        same_scene = render(other, light, rng(i, 7), scene_rng=rng(i, 4))
        out.append((anchor, same_person, same_scene))
    return out


def person_preference(anchor: np.ndarray, same_person: np.ndarray, same_scene: np.ndarray) -> float:
    """Fraction of triplets whose same-person image is more cosine-similar to the anchor than the
    same-scene image (0.5 = no preference, 0 = pure scene matching).

    Args:
        anchor, same_person, same_scene: [n, d] features of the triplets' three images.
    """

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    a, p, s = unit(anchor), unit(same_person), unit(same_scene)
    return float(np.mean((a * p).sum(1) > (a * s).sum(1)))
