"""Benchmark: CPU cost per image of our multi-crop + mask pipeline vs torchvision DINO-style multi-crop.

Same JPEGs, same process, one thread, interleaved repeats, median. Times are CPU time of the process
(`time.process_time`), so images/s is images per CPU-second = per core, and other users of a shared
machine inflate them less than wall time would:

- baseline: decode with PIL, then iBOT/DINO's `DataAugmentation` with torchvision transforms at the
  PersonViT recipe (2 global 256x128 + 6 local 96x64, aspect 3/8-2/3, flip, colour jitter, grayscale,
  PIL Gaussian blur, solarize, ToTensor + normalise) and the two block masks, stacked into a batch;
- ours, worker side: `PretrainLoader` with 0 workers over tar shards packed by `shard_tools pack`
  (tar read, decode, crop+resize to uint8, parameter draws, block masks, collate): what a DataLoader
  worker spends per image when the photometric work runs batched on the GPU;
- ours with 2 DataLoader workers (CPU of the main process + the joined workers: adds the IPC of
  the uint8 batches), and with reduced-scale JPEG decoding switched off;
- ours, everything on CPU: the same plus `device_views(batch, "cpu")` (the batched photometric ops on CPU),
  the honest number for a machine without GPU; with the exact (torchvision) colour jitter, the
  default, and with the composed-matrix jitter (`data.jitter_impl=matrix`).

Targets (issue 5): >= 4x images/s per core over the baseline; <= 6 CPU cores per A100 consuming
2,000 img/s. Writes `loader.json` next to this file.

    python benchmarks/loader.py [--images 512] [--batch 64] [--repeats 3] [--min-h 128 --max-h 384]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as T

from personvit.config.data import PretrainDataConfig
from personvit.data.device_augment import IMAGENET_MEAN, IMAGENET_STD, device_views
from personvit.data.multicrop import crop_resize, decode, sample_box, to_tensor
from personvit.data.photometric import draw_photometric
from personvit.data.pretrain_loader import PretrainLoader, crop_specs
from personvit.masking import view_masks
from shard_tools.pack import pack

GPU_IMG_S = 2000.0  # ViT-S/16 PersonViT step at ~150 TFLOP/s effective (issue 5)


# --------------------------------------------------------------------------- images

def person_jpegs(n: int, min_h: int, max_h: int, seed: int) -> list[bytes]:
    """JPEGs shaped like person crops (w/h 0.35-0.5) with smooth regions, edges and sensor noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h = int(rng.integers(min_h, max_h + 1))
        w = max(16, int(h * rng.uniform(0.35, 0.5)))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([yy * 255 / h, xx * 255 / w, np.full((h, w), rng.uniform(40, 200))], -1)
        for _ in range(6):
            y, x = rng.integers(0, h), rng.integers(0, w)
            img[y : y + h // 4, x : x + w // 3] = rng.integers(0, 256, 3)
        img += rng.normal(0, 8, img.shape)
        buf = io.BytesIO()
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# --------------------------------------------------------------------------- baseline

class _PILBlur:
    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img):
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


class _Solarize:
    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


def dino_transforms(cfg: PretrainDataConfig) -> tuple[T.Compose, T.Compose, T.Compose]:
    """iBOT's DataAugmentationiBOT at the PersonViT recipe (global 1, global 2, local)."""
    flip_color = T.Compose([
        T.RandomHorizontalFlip(p=cfg.flip_p),
        T.RandomApply([T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p),
        T.RandomGrayscale(p=cfg.grayscale_p),
    ])
    norm = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    bic = T.InterpolationMode.BICUBIC

    def rrc(size, scale):
        return T.RandomResizedCrop(size, scale=scale, ratio=cfg.aspect, interpolation=bic)

    g1 = T.Compose([rrc(cfg.global_size, cfg.global_scale), flip_color, _PILBlur(cfg.blur_p[0]), norm])
    g2 = T.Compose([rrc(cfg.global_size, cfg.global_scale), flip_color, _PILBlur(cfg.blur_p[1]),
                    _Solarize(cfg.solarize_p[1]), norm])
    loc = T.Compose([rrc(cfg.local_size, cfg.local_scale), flip_color, _PILBlur(cfg.blur_p[2]), norm])
    return g1, g2, loc


def run_baseline(jpegs: list[bytes], cfg: PretrainDataConfig) -> float:
    g1, g2, loc = dino_transforms(cfg)
    rng = np.random.default_rng(0)
    t0 = time.process_time()
    for start in range(0, len(jpegs) - cfg.batch_size_per_rank + 1, cfg.batch_size_per_rank):
        views, masks = [], []
        for data in jpegs[start : start + cfg.batch_size_per_rank]:
            img = Image.open(io.BytesIO(data)).convert("RGB")
            views.append([g1(img), g2(img)] + [loc(img) for _ in range(cfg.n_local)])
            masks.append(view_masks(cfg.grid_hw, 2, cfg.pred_ratio, cfg.pred_ratio_var, rng))
        [torch.stack(v) for v in zip(*views)], torch.stack(masks, 1)
    return time.process_time() - t0


# --------------------------------------------------------------------------- ours

def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_ours(cfg: PretrainDataConfig, with_views: bool) -> float:
    """CPU seconds of one epoch: this process plus DataLoader workers (counted once they are joined)."""
    loader = PretrainLoader(cfg, seed=0, rank=0, world_size=1)
    t0, c0 = time.process_time(), _children_cpu()
    for batch in loader.iter_epoch(0):
        if with_views:
            device_views(batch, "cpu")
    return time.process_time() - t0 + _children_cpu() - c0


def breakdown(jpegs: list[bytes], cfg: PretrainDataConfig) -> dict[str, float]:
    """Microseconds per image of each worker-side stage (one pass, same images)."""
    specs = crop_specs(cfg)
    rng = np.random.default_rng(0)
    t = {}
    t0 = time.process_time()
    decoded = [decode(d, specs, cfg.decode_draft) for d in jpegs]
    t["decode"] = time.process_time() - t0
    boxes = [[sample_box(rng, hw[0], hw[1], spec) for spec in specs] for _, hw in decoded]
    t0 = time.process_time()
    for (img, hw), bxs in zip(decoded, boxes):
        x = to_tensor(img)
        for box, spec in zip(bxs, specs):
            crop_resize(x, box, hw, spec.size)
    t["crop+resize (8 views)"] = time.process_time() - t0
    t0 = time.process_time()
    for (img, _), bxs in zip(decoded, boxes):  # the same boxes through PIL, as torchvision on PIL images does
        for box, spec in zip(bxs, specs):
            np.asarray(img.resize((spec.size[1], spec.size[0]), Image.BICUBIC, box=box))
    t["same with PIL resize"] = time.process_time() - t0
    t0 = time.process_time()
    for _ in jpegs:
        draw_photometric(rng, cfg)
    t["photometric draws"] = time.process_time() - t0
    t0 = time.process_time()
    for _ in jpegs:
        view_masks(cfg.grid_hw, 2, cfg.pred_ratio, cfg.pred_ratio_var, rng)
    t["block masks"] = time.process_time() - t0
    return {k: 1e6 * v / len(jpegs) for k, v in t.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-h", type=int, default=128)
    ap.add_argument("--max-h", type=int, default=384)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)

    jpegs = person_jpegs(args.images, args.min_h, args.max_h, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "images"
        src.mkdir()
        for i, data in enumerate(jpegs):
            (src / f"{i:06d}.jpg").write_bytes(data)
        pack("luperson", src, Path(tmp) / "shards", maxcount=128, progress=False)
        cfg = PretrainDataConfig(shards=str(Path(tmp) / "shards"), batch_size_per_rank=args.batch, num_workers=0)
        n = (args.images // args.batch) * args.batch
        runs = {
            "baseline": lambda: run_baseline(jpegs[:n], cfg),
            "ours_worker": lambda: run_ours(cfg, with_views=False),
            "ours_worker_2proc": lambda: run_ours(replace(cfg, num_workers=2), with_views=False),
            "ours_worker_nodraft": lambda: run_ours(replace(cfg, decode_draft=False), with_views=False),
            "ours_cpu_all": lambda: run_ours(cfg, with_views=True),
            "ours_cpu_all_matrix": lambda: run_ours(replace(cfg, jitter_impl="matrix"), with_views=True),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):  # interleaved, so load from other users hits all alike
            for k, fn in runs.items():
                times[k].append(fn())
        stages = breakdown(jpegs[:n], cfg)

    rate = {k: n / statistics.median(v) for k, v in times.items()}
    labels = {
        "baseline": "torchvision DINO multi-crop + masks",
        "ours_worker": "ours, worker side (photometric on GPU)",
        "ours_worker_2proc": "  same, 2 DataLoader workers (+ IPC)",
        "ours_worker_nodraft": "  same, full-size JPEG decode",
        "ours_cpu_all": "ours, all on CPU (views on CPU)",
        "ours_cpu_all_matrix": "  same, matrix colour jitter",
    }
    print(f"{n} images, height {args.min_h}-{args.max_h}, batch {args.batch}, 1 thread, median of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'pipeline (CPU time)':42s} {'img/s/core':>10s} {'ms/img':>7s} {'vs base':>8s} {'cores/A100':>10s}")
    for k, r in rate.items():
        print(f"{labels[k]:42s} {r:10.1f} {1e3 / r:7.2f} {r / rate['baseline']:7.2f}x {GPU_IMG_S / r:10.1f}")
    print("worker-side stages (us/img): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))

    result = {
        "benchmark": "loader",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "cpu_threads": 1, "cpus": os.cpu_count(), "load_avg_1_5_15": os.getloadavg()},
        "args": vars(args),
        "images": n,
        "seconds": times,
        "img_per_s_per_core": rate,
        "ratio_vs_baseline": {k: r / rate["baseline"] for k, r in rate.items()},
        "cores_per_gpu_at_2000_img_s": {k: GPU_IMG_S / r for k, r in rate.items()},
        "stages_us_per_img": stages,
    }
    (Path(__file__).with_suffix(".json")).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
