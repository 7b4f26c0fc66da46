"""Config section of the pretraining data pipeline (`PretrainConfig.data`, YAML keys `data.*`).

Defaults are the paper's best multi-crop row (SPEC.md section 5) with iBOT's photometric set and
masking recipe (section 4). Probabilities given per view kind are `(global 1, global 2, local)`,
because DINO/iBOT treat the two global views asymmetrically (blur always on the first, solarize only
on the second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


def _check_range(name: str, lo_hi: tuple[float, float], lo: float, hi: float) -> None:
    a, b = lo_hi
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{name} must be an increasing pair within [{lo}, {hi}], got {list(lo_hi)}")


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


@dataclass
class PretrainDataConfig:
    """Shards, multi-crop geometry, photometric set and student masks for pretraining.

    Attributes:
        shards: shard folder holding `manifest.json` and `{split}-NNNNNN.tar` (required).
        split: which split of the manifest to stream.
        batch_size_per_rank: images per rank per step (each image gives 2 + n_local views).
        num_workers: DataLoader worker processes per rank (0 = decode in the training process);
            the stream is identical for any value.
        prefetch_factor: batches each worker prepares ahead.
        pin_memory: pin uint8 batches for asynchronous host-to-device copies (only with CUDA).
        shuffle_group_shards: the epoch order shuffles shards, then samples within consecutive
            groups of this many shards; larger mixes batches across more shards at the cost of
            holding more shard indices per worker (memory stays bounded by the group, not the dataset).
        global_size: (H, W) of the 2 global views.
        local_size: (H, W) of the local views.
        n_local: number of local views.
        global_scale: RandomResizedCrop area fraction range of global views.
        local_scale: same for local views.
        aspect: crop aspect ratio range as width / height (3/8 .. 2/3 keeps the 1:2 person shape).
        decode_draft: let the JPEG decoder downscale by 2/4/8 while the smallest crop still has at
            least its output resolution (saves decode time on large images, never upsamples more).
        flip_p: horizontal flip probability.
        brightness, contrast, saturation, hue: colour-jitter strengths (torchvision semantics).
        jitter_p: probability of applying colour jitter.
        jitter_impl: `exact` applies torchvision's ColorJitter op by op (HSV hue, clamp after each
            op; the paper's augmentation); `matrix` composes one colour matrix per image (hue as a
            YIQ rotation, moving HSV hue by 0.5-1.6x torchvision's shift; one clamp): cheaper where
            the photometric work runs on a CPU.
        grayscale_p: probability of grayscale.
        blur_p: Gaussian blur probability per view kind (global 1, global 2, local).
        blur_sigma: blur sigma range.
        solarize_p: solarization probability per view kind (global 1, global 2, local).
        pred_ratio: masking ratio choices per global view (iBOT `pred_ratio`).
        pred_ratio_var: half-width of the uniform jitter around each choice (iBOT `pred_ratio_var`).
        pred_shape: `block` (BEiT block-wise) masks.
        pred_start_epoch: epochs before this one draw no masks.
        patch_size: ViT patch size; the mask grid is global_size // patch_size.
        max_corrupt: undecodable samples tolerated per loader (each is counted, logged and its slot
            refilled); one more stops the run with an error naming the shard and key.
        log_sample_keys: every rank appends the keys of each micro-batch it trains on to
            `<run>/sample_keys/rank<r>.jsonl` (`{"step", "first", "keys"}`; a resumed run rewrites
            the steps after its checkpoint, so readers keep the last record per (step, first)).
            To check which samples a run saw, e.g. across an elastic resume.
    """

    shards: str
    split: str = "train"
    batch_size_per_rank: int = 64
    num_workers: int = 8
    prefetch_factor: int = 2
    pin_memory: bool = True
    shuffle_group_shards: int = 4
    global_size: tuple[int, int] = (256, 128)
    local_size: tuple[int, int] = (96, 64)
    n_local: int = 6
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.1, 0.8)
    aspect: tuple[float, float] = (3 / 8, 2 / 3)
    decode_draft: bool = True
    flip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    jitter_impl: Literal["exact", "matrix"] = "exact"
    grayscale_p: float = 0.2
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: tuple[float, float, float] = (0.0, 0.2, 0.0)
    pred_ratio: tuple[float, ...] = (0.0, 0.3)
    pred_ratio_var: tuple[float, ...] = (0.0, 0.2)
    pred_shape: Literal["block"] = "block"
    pred_start_epoch: int = 0
    patch_size: int = 16
    max_corrupt: int = 100
    log_sample_keys: bool = False

    def __post_init__(self) -> None:
        if not self.shards:
            raise ValueError("shards must name the shard folder (the one holding manifest.json)")
        for name in ("batch_size_per_rank", "shuffle_group_shards", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "n_local", "max_corrupt", "pred_start_epoch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")
        for name in ("global_size", "local_size"):
            h, w = getattr(self, name)
            if h < 1 or w < 1:
                raise ValueError(f"{name} must be positive, got {[h, w]}")
            if h % self.patch_size or w % self.patch_size:
                raise ValueError(f"{name} {[h, w]} must be divisible by patch_size {self.patch_size}")
        _check_range("global_scale", self.global_scale, 1e-6, 1.0)
        _check_range("local_scale", self.local_scale, 1e-6, 1.0)
        _check_range("aspect", self.aspect, 1e-3, 1e3)
        _check_range("blur_sigma", self.blur_sigma, 1e-6, 100.0)
        for name in ("flip_p", "jitter_p", "grayscale_p"):
            _check_prob(name, getattr(self, name))
        for name in ("blur_p", "solarize_p"):
            for p in getattr(self, name):
                _check_prob(name, p)
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.jitter_impl not in ("exact", "matrix"):
            raise ValueError(f"jitter_impl must be 'exact' or 'matrix', got {self.jitter_impl!r}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        if not self.pred_ratio or len(self.pred_ratio) != len(self.pred_ratio_var):
            raise ValueError(
                f"pred_ratio {list(self.pred_ratio)} and pred_ratio_var {list(self.pred_ratio_var)} "
                "must be non-empty lists of the same length"
            )
        for r, v in zip(self.pred_ratio, self.pred_ratio_var):
            if not (0.0 <= r - v and r + v < 1.0 and v >= 0.0):
                raise ValueError(f"pred_ratio {r} +- pred_ratio_var {v} must stay within [0, 1)")

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Patch grid of a global view, the shape of each student mask."""
        return self.global_size[0] // self.patch_size, self.global_size[1] // self.patch_size

    @property
    def n_views(self) -> int:
        """2 global views + n_local local views."""
        return 2 + self.n_local
