"""`personvit visualize KIND ...`: PNG figures from a checkpoint and a shard folder.

Kinds: `attention` (last-block CLS attention per head), `patch-clusters` (k-means over patch tokens),
`correspondence` (mutual nearest-neighbour patches of two images of one person), `ranks` (top-k
gallery lists of an evaluation run). Files are named `<kind>_step<S>_<key>.png` in `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from personvit import cli_args
from personvit.checkpoint import CheckpointError
from personvit.data.shards import ShardError
from personvit.rng import Stream, numpy_rng
from personvit.viz import draw
from personvit.viz.attention import write_attention
from personvit.viz.correspondence import write_correspondence
from personvit.viz.inputs import LoadedModel, find_pairs, load_model, load_samples, to_batch
from personvit.viz.patch_clusters import write_patch_clusters
from personvit.viz.ranks import load_features, ranked_lists, render_ranks

__all__ = ["main"]


def _load(args: argparse.Namespace) -> LoadedModel:
    overrides = {"patch_size": args.patch_size, "embed_dim": args.embed_dim, "depth": args.depth,
                 "num_heads": args.num_heads}
    return load_model(args.ckpt, args.which, args.arch, overrides, tuple(args.img_size) if args.img_size else None)


def _run_model_kind(args: argparse.Namespace, out: Path) -> list[Path]:
    lm = _load(args)
    if args.kind == "correspondence":
        if args.keys and len(args.keys) != 2:
            raise ValueError(f"correspondence takes exactly two --keys, got {len(args.keys)}")
        pairs = [tuple(args.keys)] if args.keys else find_pairs(args.shards, args.split, args.num, args.seed)
        paths = []
        for ka, kb in pairs:
            samples = load_samples(args.shards, args.split, keys=[ka, kb])
            x, images = to_batch([s.image for s in samples], lm)
            captions = tuple([s.key, f"pid {s.pid}, cam {s.camid}"] for s in samples)
            paths.append(write_correspondence(lm.model, x, images, captions, (ka, kb), args.top, lm.step_tag, out))
        return paths
    samples = load_samples(args.shards, args.split, keys=args.keys, count=args.num, seed=args.seed)
    x, images = to_batch([s.image for s in samples], lm)
    keys = [s.key for s in samples]
    if args.kind == "attention":
        return write_attention(lm.model, x, images, keys, lm.step_tag, out)
    if args.features == "head" and lm.head_mlp is None:
        raise ValueError(f"{args.ckpt}: the checkpoint's {args.which} has no projection head; use --features backbone")
    head = lm.head_mlp if args.features == "head" else None
    return [write_patch_clusters(lm.model, x, images, keys, args.k, args.seed, lm.step_tag, out, args.show, head)]


def _features_step_tag(features: str, data: dict) -> str:
    """`step<S>` from the npz's `step`, else from `results.json` beside it (written by finetune)."""
    step = data.get("step")
    if step is None:
        folder = Path(features) if Path(features).is_dir() else Path(features).parent
        try:
            step = json.loads((folder / "results.json").read_text()).get("step")
        except (OSError, ValueError, AttributeError):
            step = None
    return f"step{int(step)}" if isinstance(step, (int, np.integer)) or (
        isinstance(step, np.ndarray) and step.ndim == 0) else "stepNA"


def _run_ranks(args: argparse.Namespace, out: Path) -> list[Path]:
    data = load_features(args.features)
    q_keys = [str(k) for k in data["q_keys"]]
    if args.queries:
        where = {k: i for i, k in enumerate(q_keys)}
        missing = [k for k in args.queries if k not in where]
        if missing:
            raise ValueError(f"query key {missing[0]!r} is not in {args.features}")
        queries = [where[k] for k in args.queries]
    else:
        queries = sorted(numpy_rng(args.seed, Stream.ORDER).choice(len(q_keys), min(args.num, len(q_keys)),
                                                                   replace=False).tolist())
    lists = ranked_lists(data, queries, args.topk, drop_same_camera=not args.keep_same_camera)
    q_imgs = load_samples(args.shards, args.query_split, keys=[q_keys[i] for i in queries])
    g_needed = sorted({str(data["g_keys"][g]) for r in lists for g in r.gallery})
    g_imgs = {s.key: s.image for s in load_samples(args.shards, args.gallery_split, keys=g_needed)}
    step_tag = _features_step_tag(args.features, data)
    paths = []
    for r, q in zip(lists, q_imgs):
        gallery = [g_imgs[str(data["g_keys"][g])] for g in r.gallery]
        title = f"query {q.key}: top-{len(r.gallery)}, {int(r.hit.sum())} correct ({step_tag})"
        path = draw.output_path(out, "ranks", step_tag, q.key)
        render_ranks(q.image, gallery, r, data, title).save(path)
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    """Entry point of `personvit visualize`; returns the exit code."""
    args = cli_args.visualize().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad():  # not set_grad_enabled(False): that would leak into a caller's process
            paths = _run_ranks(args, out) if args.kind == "ranks" else _run_model_kind(args, out)
    except (ShardError, CheckpointError, ValueError, FileNotFoundError) as e:
        # User mistakes (bad key, missing file, wrong architecture): one line, no traceback.
        print(f"personvit visualize {args.kind}: error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
