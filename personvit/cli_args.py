"""Argument parsers of every `personvit` subcommand, free of torch and of the training stack.

`personvit CMD --help` and a usage mistake are answered from here in a fraction of a second: the
command's module (which imports torch, ~7 s on a busy login node) is imported only once the
arguments parse. Each command's `main(argv)` parses with the same parser, so jobs and tests that
call `main` directly see the same options.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["PARSERS", "parse", "parser_for"]


def _recipe(parser: argparse.ArgumentParser, example: str, override: str) -> argparse.ArgumentParser:
    parser.add_argument("config", help=f"YAML recipe, e.g. {example}")
    parser.add_argument("overrides", nargs="*", help=f"dotted key=value overrides, e.g. {override}")
    return parser


def _allow_change(parser: argparse.ArgumentParser) -> None:
    # Consumed by the run-folder resume contract: keys a resumed run may change on purpose.
    parser.add_argument("--allow-change", dest="allow_change", action="append", default=None, metavar="KEYS",
                        help="comma-separated config keys (or sections) a resume may change, e.g. "
                             "run.seed,optim.base_lr (repeatable); without it a rerun whose config differs "
                             "from the run folder's is refused")


def pretrain() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="personvit pretrain",
                                description="DINO+MIM pretraining of a PersonViT backbone; rerun the same "
                                            "command to resume.")
    _recipe(p, "configs/pretrain/vit_small_luperson.yaml", "data.shards=/data/lup")
    _allow_change(p)
    return p


def finetune() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="personvit finetune",
                                description="BoT fine-tuning of a ViT on a labeled ReID shard set")
    _recipe(p, "configs/finetune/tiny_cpu.yaml", "data.shards=/data/market train.epochs=60")
    _allow_change(p)
    return p


def evaluate() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="personvit evaluate",
                                description="mAP / CMC / mINP of a model on a query/gallery shard set")
    _recipe(p, "configs/finetune/tiny_cpu.yaml", "weights=runs/ft-market data.shards=/data/market")
    p.add_argument("--random-init", action="store_true",
                   help="evaluate a randomly initialised backbone on purpose (a baseline); without it, "
                        "`weights` or `model.init` must be set")
    return p


def export() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="personvit export",
                                description="export features (.npz/.npy) or the backbone (ONNX)")
    p.add_argument("config", help="an evaluate / fine-tune recipe (model, data.shards, weights)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. weights=runs/ft-market")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--splits", nargs="+", default=["query", "gallery"], help="splits to export")
    p.add_argument("--format", choices=["npz", "npy"], default="npz", dest="fmt")
    p.add_argument("--onnx", action="store_true", help="also export the feature extractor to ONNX and check it")
    return p


def _model_args(p: argparse.ArgumentParser, split: str, num: int) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint file, or a run folder (its latest checkpoint)")
    p.add_argument("--shards", required=True, help="shard folder with manifest.json")
    p.add_argument("--split", default=split, help=f"split to take images from (default {split})")
    p.add_argument("--keys", nargs="+", default=None, help="sample keys to show (default: random ones)")
    p.add_argument("--num", type=int, default=num, help=f"random images when no --keys (default {num})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choices")
    p.add_argument("--which", choices=["teacher", "student"], default="teacher",
                   help="network of a pretraining checkpoint (default teacher)")
    p.add_argument("--arch", default=None, help="ViT name (default: model.arch of the run's config.yaml)")
    p.add_argument("--patch-size", type=int, default=None, help="override the architecture's patch size")
    p.add_argument("--embed-dim", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--num-heads", type=int, default=None)
    p.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="model input size (default: data.img_size of the run's config.yaml)")
    p.add_argument("--out", default="viz", help="output folder (default ./viz)")


def visualize() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="personvit visualize",
                                 description="PNG figures from a checkpoint and a shard folder")
    sub = ap.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = sub.add_parser("attention", help="last-block CLS attention per head and their mean")
    _model_args(p, "train", 4)
    p = sub.add_parser("patch-clusters", help="k-means over patch tokens of many images, red dots per cluster")
    _model_args(p, "train", 32)
    p.add_argument("--k", type=int, default=6, help="number of clusters (default 6)")
    p.add_argument("--show", type=int, default=6, help="images drawn per cluster (default 6)")
    p.add_argument("--features", choices=["backbone", "head"], default="backbone",
                   help="cluster the backbone's patch tokens or the projection head's output (pretraining checkpoints)")
    p = sub.add_parser("correspondence", help="mutual nearest-neighbour patch pairs of two images of one person")
    _model_args(p, "train", 1)
    p.add_argument("--top", type=int, default=12, help="pairs drawn (default 12)")
    p = sub.add_parser("ranks", help="top-k gallery images of queries from an evaluation run's features.npz")
    p.add_argument("--features", required=True, help="features.npz, or the evaluation run folder holding it")
    p.add_argument("--shards", required=True, help="shard folder with the query and gallery splits")
    p.add_argument("--query-split", default="query")
    p.add_argument("--gallery-split", default="gallery")
    p.add_argument("--queries", nargs="+", default=None, help="query keys (default: --num random queries)")
    p.add_argument("--num", type=int, default=4)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-same-camera", action="store_true",
                   help="do not drop same-pid same-camera gallery items (the protocol drops them)")
    p.add_argument("--out", default="viz")
    return ap


def ckpt() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="personvit ckpt", description="inspect or compare checkpoints")
    sub = p.add_subparsers(dest="action", required=True)
    p_info = sub.add_parser("info", help="summarise a checkpoint (file, checkpoint folder or run folder)")
    p_info.add_argument("path")
    p_cmp = sub.add_parser("compare", help="exit 0 only if every tensor and counter is bitwise equal")
    p_cmp.add_argument("a")
    p_cmp.add_argument("b")
    return p


def report() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="personvit report",
                                description="PNG curves and a markdown summary: training curves of a pretraining "
                                            "run folder, or mAP / Rank-1 vs pretraining epoch of a sweep folder")
    p.add_argument("folder", help="a pretraining run folder (metrics.jsonl) or a sweep folder (sweep.json)")
    p.add_argument("--out", default=None, help="output folder (default FOLDER/report)")
    return p


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "pretrain": pretrain, "finetune": finetune, "evaluate": evaluate, "export": export,
    "visualize": visualize, "ckpt": ckpt, "report": report,
}


def parser_for(cmd: str) -> argparse.ArgumentParser:
    """The parser of subcommand `cmd` (a key of PARSERS)."""
    return PARSERS[cmd]()


# Recipe commands take options anywhere among the overrides (`CONFIG a=1 --allow-change run.seed b=2`);
# argparse's intermixed mode allows that but not subcommands, so the others parse the plain way.
_INTERMIXED = frozenset({"pretrain", "finetune", "evaluate"})


def parse(cmd: str, argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv` with subcommand `cmd`'s parser (exits with a usage line on a mistake)."""
    parser = parser_for(cmd)
    return parser.parse_intermixed_args(list(argv)) if cmd in _INTERMIXED else parser.parse_args(list(argv))
