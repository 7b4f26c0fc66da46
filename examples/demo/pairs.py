"""The demo's person-vs-scene number: which image of a triplet does a backbone put nearer the anchor?

`shard_tools.synth.person_scene_triplets` renders (anchor, same person in another scene, another
person in the anchor's scene); this scores a backbone's CLS and mean-patch features on them, and raw
pixels as the reference a learned feature should at least match.
"""

from __future__ import annotations

import numpy as np

TRIPLETS = 200


def _features(lm, images) -> tuple[np.ndarray, np.ndarray]:
    """(CLS, mean patch token) of `images` under the loaded backbone `lm` (personvit.viz LoadedModel)."""
    import torch

    from personvit.engine.knn_monitor import token_features
    from personvit.viz.inputs import to_batch

    x, _ = to_batch(images, lm)
    with torch.no_grad():
        f = token_features(lm.model(x)).numpy()
    d = lm.model.embed_dim
    return f[:, :d], f[:, d:]


def person_vs_scene(models: dict[str, object], count: int = TRIPLETS, seed: int = 0) -> dict[str, dict[str, float]]:
    """{name: {"cls": fraction, "patch": fraction}} for each LoadedModel, plus `raw pixels 16x8`.

    A fraction is how often the same-person image is nearer the anchor than the same-scene image
    (0.5: no preference; 0: the feature follows the scene).
    """
    from shard_tools.synth import person_preference, person_scene_triplets

    triplets = person_scene_triplets(count, seed)
    out: dict[str, dict[str, float]] = {}
    for name, lm in models.items():
        feats = [_features(lm, [t[k] for t in triplets]) for k in range(3)]
        out[name] = {kind: person_preference(*(f[i] for f in feats)) for i, kind in enumerate(("cls", "patch"))}
    pixels = [np.stack([np.asarray(t[k].resize((8, 16)), np.float32).ravel() for t in triplets]) for k in range(3)]
    mean = pixels[0].mean(axis=0)
    out["raw pixels 16x8"] = {"cls": person_preference(*(p - mean for p in pixels))}
    return out
