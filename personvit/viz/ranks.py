"""`ranks`: a query and its top-k gallery images, green = same identity, red = different.

Reads an evaluation run's `features.npz` (q_feats, g_feats, q_pids, g_pids, q_camids, g_camids,
q_keys, g_keys) and ranks exactly as the metrics do (SPEC.md section 8): Euclidean distance, ties by
gallery order, gallery items with the query's pid and camera removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from personvit.evaluation import pairwise_distance
from personvit.viz import draw

__all__ = ["FEATURE_KEYS", "RankedList", "load_features", "ranked_lists", "render_ranks"]

FEATURE_KEYS = ("q_feats", "g_feats", "q_pids", "g_pids", "q_camids", "g_camids", "q_keys", "g_keys")


@dataclass
class RankedList:
    """One query's top-k gallery entries."""

    query: int  # index into the query arrays
    gallery: np.ndarray  # [k] gallery indices, best first
    dist: np.ndarray  # [k] distances
    hit: np.ndarray  # [k] bool, same pid as the query


def load_features(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a `features.npz` (or of the one in an evaluation run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "features.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no features file at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in FEATURE_KEYS if k not in npz.files]
            if missing:
                raise ValueError(f"{path} lacks {', '.join(missing)} (has {', '.join(npz.files)})")
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read features ({e})") from None


def ranked_lists(data: dict[str, np.ndarray], queries: list[int], topk: int,
                 drop_same_camera: bool = True) -> list[RankedList]:
    """Top-k gallery items of each query under the evaluation protocol.

    Args:
        data: arrays from `load_features`.
        queries: query indices.
        topk: list length.
        drop_same_camera: remove gallery items with the query's pid and camera (the protocol).
    """
    q = torch.from_numpy(np.asarray(data["q_feats"], dtype=np.float32)[queries])
    dist = pairwise_distance(q, torch.from_numpy(np.asarray(data["g_feats"], dtype=np.float32))).numpy()
    out = []
    for row, qi in zip(dist, queries):
        same_pid = data["g_pids"] == data["q_pids"][qi]
        keep = ~(same_pid & (data["g_camids"] == data["q_camids"][qi])) if drop_same_camera else np.ones_like(same_pid)
        idx = np.flatnonzero(keep)
        order = idx[np.argsort(row[idx], kind="stable")[:topk]]
        out.append(RankedList(qi, order, row[order], same_pid[order]))
    return out


def render_ranks(query: Image.Image, gallery: list[Image.Image], ranked: RankedList, data: dict[str, np.ndarray],
                 title: str, height: int = 192) -> Image.Image:
    """The query (blue frame) then its ranked gallery images (green/red frames) with distances."""

    def panel(im: Image.Image, colour, lines: list[str]) -> Image.Image:
        width = max(1, round(im.width * height / im.height))
        return draw.titled(draw.bordered(im.convert("RGB").resize((width, height), Image.Resampling.BICUBIC),
                                         colour), lines, size=12, fit=True)

    qi = ranked.query
    cells = [panel(query, draw.BLUE, ["query", f"pid {data['q_pids'][qi]} cam {data['q_camids'][qi]}", str(data["q_keys"][qi])])]
    for r, (gi, d, hit) in enumerate(zip(ranked.gallery, ranked.dist, ranked.hit), start=1):
        pid = int(data["g_pids"][gi])
        tag = {0: "distractor", -1: "junk"}.get(pid, f"pid {pid}")
        cells.append(panel(gallery[r - 1], draw.GREEN if hit else draw.RED,
                           [f"#{r}  d={d:.4g}", f"{tag} cam {data['g_camids'][gi]}", str(data["g_keys"][gi])]))
    legend = draw.legend([(draw.BLUE, "query"), (draw.GREEN, "same identity"), (draw.RED, "different identity")])
    return draw.vstack([draw.titled(draw.hstack(cells), [title], size=15), legend])
