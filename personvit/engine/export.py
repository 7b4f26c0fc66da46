"""`personvit export CONFIG --out DIR [key=value ...]`: features to .npz/.npy, the backbone to ONNX.

Features are the evaluation features (pre-BN CLS, L2-normalised, flip-averaged when `eval.flip`),
written per split with pids, camids, sample keys and source paths, as plain arrays (no pickles).
`--onnx` exports the feature extractor (images [B, 3, H, W] normalised as in evaluation -> L2-normalised
feature [B, D], dynamic batch) and checks it by running it in onnxruntime against PyTorch on real
images of the first split. Both come from the optional extra `personvit[onnx]`; without them the
ONNX step is skipped with a message saying so.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from personvit import cli_args
from personvit.config.core import load_config
from personvit.config.finetune import EvaluateConfig
from personvit.data.reid import ReIDSplit, ReIDTestDataset, read_reid_split
from personvit.data.reid_transforms import EvalTransform
from personvit.data.shards import ShardError
from personvit.engine.evaluate import build_eval_model, extract_features
from personvit.models.reid import ReIDModel
from personvit.runlog import get_logger

log = get_logger(__name__)

ONNX_NAME = "backbone.onnx"
ONNX_OPSET = 17
ONNX_ATOL = 1e-4


class FeatureExtractor(nn.Module):
    """images -> L2-normalised pre-BN CLS feature: what the ONNX file computes.

    Args:
        model: the ReID model.
    """

    def __init__(self, model: ReIDModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.features(images), dim=1)


def split_arrays(split: ReIDSplit, feats: torch.Tensor) -> dict[str, np.ndarray]:
    """The exported arrays of one split: feats, pids, camids, keys, paths (unicode arrays, no objects)."""
    return {"feats": feats.numpy(), "pids": split.pids, "camids": split.camids,
            "keys": np.array(split.keys, dtype=str), "paths": np.array(split.paths, dtype=str)}


def write_split(out: Path, name: str, arrays: dict[str, np.ndarray], fmt: Literal["npz", "npy"]) -> list[Path]:
    """Write `<name>.npz`, or one `<name>_<field>.npy` per array; returns the files written."""
    if fmt == "npz":
        path = out / f"{name}.npz"
        np.savez(path, **arrays)
        return [path]
    paths = []
    for field, arr in arrays.items():
        path = out / f"{name}_{field}.npy"
        np.save(path, arr, allow_pickle=False)
        paths.append(path)
    return paths


def onnx_available() -> bool:
    """True when both `onnx` (needed by the exporter) and `onnxruntime` (the check) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def export_onnx(model: ReIDModel, images: torch.Tensor, path: Path) -> dict[str, Any]:
    """Export the feature extractor to ONNX and compare onnxruntime's output with PyTorch's.

    Args:
        model: the ReID model (eval mode, CPU).
        images: a batch of real, normalised images used for tracing and for the check.
        path: output `.onnx` file.
    Returns:
        The check report: max abs difference, tolerance, batch size, pass flag.
    """
    import onnxruntime

    wrapper = FeatureExtractor(model).eval()
    sample = images[:2]
    # The TorchScript-based exporter: the dynamo exporter needs `onnxscript`, an extra dependency.
    # Its tracer warns about every Python-level shape check of the backbone; they are static here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (sample,), str(path), input_names=["images"], output_names=["feat"],
                          dynamic_axes={"images": {0: "batch"}, "feat": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        want = wrapper(images).numpy()
    diff = float(np.abs(got - want).max())
    return {"file": path.name, "opset": ONNX_OPSET, "batch": int(images.shape[0]), "max_abs_diff": diff,
            "atol": ONNX_ATOL, "ok": bool(diff <= ONNX_ATOL)}


def run(cfg: EvaluateConfig, out: Path, splits: Sequence[str], fmt: Literal["npz", "npy"], onnx: bool) -> dict[str, Any]:
    """Export features of `splits` (and the ONNX backbone when asked); returns a summary.

    Args:
        cfg: model / weights and data settings (an evaluate or fine-tune recipe).
        out: output folder.
        splits: split names of `data.shards` to export.
        fmt: `npz` (one file per split) or `npy` (one file per array).
        onnx: also export and check the ONNX feature extractor.
    """
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.run.seed)
    model, source = build_eval_model(cfg)
    model.to(device).eval()
    summary: dict[str, Any] = {"weights": source, "splits": {}}
    first: ReIDSplit | None = None
    for name in splits:
        split = read_reid_split(cfg.data.shards, name)
        first = first or split
        feats = extract_features(model, split, cfg.data, cfg.eval.batch_size, cfg.eval.flip, device)
        files = write_split(out, name, split_arrays(split, feats), fmt)
        summary["splits"][name] = {"samples": len(split), "dim": int(feats.shape[1]), "files": [f.name for f in files]}
        log.info("exported %d %s features (dim %d) to %s", len(split), name, feats.shape[1], ", ".join(map(str, files)))
    if onnx:
        if not onnx_available():
            msg = "ONNX export skipped: needs the optional extra (pip install 'personvit[onnx]': onnx, onnxruntime)"
            log.warning(msg)
            summary["onnx"] = {"skipped": msg}
        else:
            dataset = ReIDTestDataset(first, EvalTransform(cfg.data.img_size, cfg.data.mean, cfg.data.std))
            images = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))])
            report = export_onnx(model.cpu(), images, out / ONNX_NAME)
            summary["onnx"] = report
            log.info("ONNX %s: onnxruntime vs PyTorch max |diff| %.2e (atol %.0e) on %d images: %s", report["file"],
                     report["max_abs_diff"], report["atol"], report["batch"], "ok" if report["ok"] else "MISMATCH")
    (out / "export.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: Sequence[str]) -> int:
    """Entry of `personvit export`; exits 1 when the ONNX check fails."""
    args = cli_args.export().parse_args(list(argv))
    cfg = load_config(EvaluateConfig, args.config, args.overrides)
    try:
        summary = run(cfg, args.out, args.splits, args.fmt, args.onnx)
    except ShardError as e:
        raise SystemExit(f"personvit export: error: {e}") from None
    return 1 if summary.get("onnx", {}).get("ok") is False else 0
