"""`personvit evaluate CONFIG [key=value ...]`: retrieval metrics of a model on a query/gallery shard set.

Features are the pre-BN CLS token, L2-normalised (optionally averaged with the mirrored image's),
ranked by Euclidean distance computed in chunks (SPEC.md section 8), optionally k-reciprocal
re-ranked. Writes to the run folder: `results.json` (mAP, rank1/5/10, mINP as fractions),
`features.npz` (q/g feats, pids, camids, keys; read by the visualisation tools) and, on request,
`per_query.csv`. The same functions evaluate the model at the end of `personvit finetune`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from personvit import cli_args
from personvit.atomic_write import atomic_write
from personvit.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint_path
from personvit.config.core import ConfigError, load_config
from personvit.config.finetune import EvalOptions, EvaluateConfig, ReIDDataConfig
from personvit.data.reid import ReIDSplit, ReIDTestDataset, read_reid_split
from personvit.data.reid_transforms import EvalTransform
from personvit.data.shards import ShardError
from personvit.evaluation import evaluate_rank, pairwise_distance, rerank, write_per_query_csv
from personvit.models.build import build_eval_reid_model, model_arch
from personvit.models.loading import load_backbone
from personvit.models.reid import ReIDModel, load_reid_weights
from personvit.precision import autocast_settings
from personvit.runlog import ProgressReporter, get_logger, resolve_run_dir, start_run

log = get_logger(__name__)

RESULTS_NAME = "results.json"


class EvaluationError(ValueError):
    """Query/gallery data that cannot be evaluated (e.g. no query keeps a true match); one line."""


FEATURES_NAME = "features.npz"
PER_QUERY_NAME = "per_query.csv"


@torch.no_grad()
def embed_split(embed: Callable[[torch.Tensor], torch.Tensor], dim: int, split: ReIDSplit, data: ReIDDataConfig,
                batch_size: int, device: torch.device, amp_dtype: torch.dtype | None = None,
                progress: bool = True) -> torch.Tensor:
    """`embed` (images -> [B, dim] features) over every image of a split, in split order, un-normalised.

    Args:
        embed: feature function; runs under no_grad and the given autocast.
        dim: feature size.
        split: the images.
        data: input size, normalisation and loader workers.
        batch_size: images per forward pass.
        device: where `embed` runs.
        amp_dtype: autocast dtype (None = full precision).
        progress: show progress.
    Returns:
        [N, dim] float32 CPU tensor.
    """
    dataset = ReIDTestDataset(split, EvalTransform(data.img_size, data.mean, data.std))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=min(data.num_workers, os.cpu_count() or 1),
                                         pin_memory=device.type == "cuda")
    out = torch.empty(len(split), dim, dtype=torch.float32)
    with ProgressReporter(len(split), f"features {split.name}", enabled=progress) as bar:
        for images, index in loader:
            images = images.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out[index] = embed(images).float().cpu()
            bar.advance(images.shape[0])
    return out


def extract_features(model: ReIDModel, split: ReIDSplit, data: ReIDDataConfig, batch_size: int, flip: bool,
                     device: torch.device, amp_dtype: torch.dtype | None = None, progress: bool = True) -> torch.Tensor:
    """L2-normalised pre-BN CLS features of every image of a split, in split order.

    Args:
        model: the ReID model (put in eval mode here).
        split: query or gallery split.
        data: input size and normalisation.
        batch_size: images per forward pass.
        flip: average with the horizontally mirrored image's feature before normalising.
        device: where the model runs.
        amp_dtype: autocast dtype (None = full precision).
        progress: show progress.
    Returns:
        [N, D] float32 CPU tensor.
    """
    model.eval()

    def embed(images: torch.Tensor) -> torch.Tensor:
        feat = model.features(images).float()
        return feat + model.features(images.flip(3)).float() if flip else feat

    feats = embed_split(embed, model.backbone.embed_dim, split, data, batch_size, device, amp_dtype, progress)
    return F.normalize(feats, dim=1)


def rank_features(q_feats: torch.Tensor, g_feats: torch.Tensor, query: ReIDSplit, gallery: ReIDSplit,
                  opts: EvalOptions) -> dict[str, Any]:
    """`evaluate_rank` on Euclidean (or re-ranked) distances, with per-query results.

    Args:
        q_feats, g_feats: L2-normalised features.
        query, gallery: their splits (pids, camids).
        opts: re-ranking and CMC length.
    """
    if opts.rerank:
        # rerank() works on squared Euclidean distances of the features internally (Zhong et al.).
        distmat = rerank(q_feats, g_feats, k1=opts.k1, k2=opts.k2, lambda_value=opts.lambda_value)
    else:
        distmat = pairwise_distance(q_feats, g_feats, metric="euclidean").numpy()
    try:
        return evaluate_rank(distmat, query.pids, gallery.pids, query.camids, gallery.camids,
                             max_rank=max(opts.max_rank, 10), return_per_query=True)
    except ValueError as e:
        raise EvaluationError(f"{query.name} vs {gallery.name}: {e}") from None


def summarize(result: dict[str, Any], num_query: int, num_gallery: int) -> dict[str, Any]:
    """The `results.json` content: the DESIGN.md keys as fractions, plus counts and the CMC curve."""
    cmc = result["cmc"]
    return {
        "mAP": float(result["mAP"]),
        "rank1": float(cmc[0]),
        "rank5": float(cmc[4]),
        "rank10": float(cmc[9]),
        "mINP": float(result["mINP"]),
        "num_query": int(num_query),
        "num_valid_query": int(result["num_valid"]),
        "num_gallery": int(num_gallery),
        "cmc": [float(v) for v in cmc],
    }


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write JSON via a temporary file and a rename (a reader never sees half a file)."""
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def save_features(path: Path, q_feats: torch.Tensor, g_feats: torch.Tensor, query: ReIDSplit, gallery: ReIDSplit,
                  step: int | None = None) -> None:
    """`features.npz`: q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, q_keys, g_keys (no pickles), and
    `step` (0-d int64) when the features come from a training step, so figures made from the file alone
    can name the checkpoint."""
    extra = {} if step is None else {"step": np.int64(step)}
    np.savez(path, q_feats=q_feats.numpy(), g_feats=g_feats.numpy(), q_pids=query.pids, g_pids=gallery.pids,
             q_camids=query.camids, g_camids=gallery.camids, q_keys=np.array(query.keys, dtype=str),
             g_keys=np.array(gallery.keys, dtype=str), **extra)


def evaluate_model(model: ReIDModel, data: ReIDDataConfig, opts: EvalOptions, run_dir: Path, device: torch.device,
                   amp_dtype: torch.dtype | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Extract query/gallery features, rank, and write the run folder's outputs.

    Args:
        model: the model to evaluate.
        data: shard set, split names, input size and normalisation.
        opts: evaluation options.
        run_dir: where `results.json` (and features / CSV) go.
        device: where the model runs.
        amp_dtype: autocast dtype (None = full precision).
        extra: more fields for `results.json` (e.g. the evaluated checkpoint).
    Returns:
        The `results.json` content.
    """
    query = read_reid_split(data.shards, data.query_split)
    gallery = read_reid_split(data.shards, data.gallery_split)
    q_feats = extract_features(model, query, data, opts.batch_size, opts.flip, device, amp_dtype)
    g_feats = extract_features(model, gallery, data, opts.batch_size, opts.flip, device, amp_dtype)
    result = rank_features(q_feats, g_feats, query, gallery, opts)
    summary = summarize(result, len(query), len(gallery))
    summary.update(flip=opts.flip, rerank=opts.rerank, **(extra or {}))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RESULTS_NAME, summary)
    if opts.save_features:
        save_features(run_dir / FEATURES_NAME, q_feats, g_feats, query, gallery, summary.get("step"))
    if opts.per_query_csv:
        write_per_query_csv(run_dir / PER_QUERY_NAME, result, query.keys)
    log.info("%s/%s vs %s: mAP %.2f%% rank-1 %.2f%% rank-5 %.2f%% rank-10 %.2f%% mINP %.2f%% (%d valid queries)",
             data.shards, data.query_split, data.gallery_split, 100 * summary["mAP"], 100 * summary["rank1"],
             100 * summary["rank5"], 100 * summary["rank10"], 100 * summary["mINP"], summary["num_valid_query"])
    return summary


def init_checkpoint(init: str) -> Path:
    """The file behind `model.init`: a checkpoint file as is, a run / checkpoint folder's latest checkpoint."""
    path = Path(init).expanduser()
    return resolve_checkpoint_path(path) if path.is_dir() else path


def build_eval_model(cfg: EvaluateConfig) -> tuple[ReIDModel, str]:
    """The model to evaluate and a description of its weights.

    `weights` (a fine-tuning checkpoint or run folder) gives the full model, built with the
    architecture recorded in the checkpoint; otherwise `model.init` gives a backbone (e.g. a
    pretraining teacher); with neither, the backbone is randomly initialised (a baseline).
    """
    if cfg.weights:
        path = resolve_checkpoint_path(cfg.weights)
        state = load_checkpoint(path)["state"]
        if not isinstance(state, dict) or "model" not in state:
            raise CheckpointError(f"{path}: not a fine-tuning checkpoint (no 'model' entry); "
                                  "use model.init for pretraining checkpoints")
        arch = dict(state.get("model_arch") or model_arch(cfg.model, cfg.data.img_size))
        if list(arch["img_size"]) != list(cfg.data.img_size):
            log.warning("evaluating at data.img_size=%s but the model was fine-tuned at %s",
                        list(cfg.data.img_size), list(arch["img_size"]))
        model = build_eval_reid_model(cfg.model, cfg.data.img_size, arch_record=arch)
        load_reid_weights(model, state["model"], str(path))
        return model, str(path)
    model = build_eval_reid_model(cfg.model, cfg.data.img_size)
    if cfg.model.init:
        load_backbone(model.backbone, init_checkpoint(cfg.model.init), which="teacher", strict=cfg.model.init_strict)
        return model, cfg.model.init
    log.warning("no weights and no model.init (--random-init): evaluating a randomly initialised backbone")
    return model, "random-init"


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    """Evaluate per `cfg`; returns the `results.json` content."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run_dir = start_run(cfg, resolve_run_dir(cfg.run.dir, "evaluate"), "evaluate")
    torch.manual_seed(cfg.run.seed)  # only a random-init baseline draws anything
    model, source = build_eval_model(cfg)
    model.to(device)
    amp_dtype, _ = autocast_settings(cfg.amp, device)
    return evaluate_model(model, cfg.data, cfg.eval, run_dir, device, amp_dtype, extra={"weights": source})


def main(argv: Sequence[str]) -> int:
    """Entry of `personvit evaluate`."""
    args = cli_args.parse("evaluate", argv)
    cfg = load_config(EvaluateConfig, args.config, args.overrides)
    if not (cfg.weights or cfg.model.init or args.random_init):
        # A forgotten `weights=` would otherwise report a random network's mAP as if it were the model's.
        raise ConfigError("nothing to evaluate: set weights=RUN_OR_CKPT (a fine-tuned model) or "
                          "model.init=CKPT (a backbone), or pass --random-init for a random-backbone baseline")
    try:
        run(cfg)
    except (ShardError, EvaluationError) as e:
        raise SystemExit(f"personvit evaluate: error: {e}") from None
    return 0
