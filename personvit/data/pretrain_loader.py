"""Deterministic streaming multi-crop loader for pretraining.

Every random choice is keyed by the sample's *global position* in the epoch (see `shards.py` for the
order): crops by `numpy_rng(seed, Stream.CROP, epoch, position)`, photometric parameters by
Stream.COLOR, masks by Stream.MASK. Batch `b` of a rank is positions `first + b*B .. first + b*B + B-1`
and is built entirely by one worker; worker `k` of `K` builds batches `start_batch + k, + k + K, ...`,
which torch's DataLoader hands back in exactly that round-robin order. So the stream is the same
for any `num_workers`, and resuming at `start_batch` neither reads nor decodes skipped samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from personvit.config.data import PretrainDataConfig
from personvit.data.collate import PretrainBatch, SampleViews, collate
from personvit.data.multicrop import CropSpec, decode, multicrop
from personvit.data.photometric import draw_photometric
from personvit.data.shards import EpochOrder, ShardReader, rank_positions, read_manifest
from personvit.data.worker_quiet import quiet_worker_interrupts
from personvit.masking import view_masks
from personvit.rng import Stream, numpy_rng

__all__ = ["CorruptDataError", "PretrainBatch", "PretrainLoader"]

log = logging.getLogger(__name__)

# What PIL raises for bad bytes: truncated/garbled data (OSError, SyntaxError from some plugins),
# unknown formats, absurd sizes (DecompressionBombError is not an OSError).
_DECODE_ERRORS = (OSError, ValueError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError)


class CorruptDataError(RuntimeError):
    """More undecodable samples than `data.max_corrupt`; the message names the last shard/key."""


def crop_specs(cfg: PretrainDataConfig) -> list[CropSpec]:
    """2 global specs, then n_local local specs."""
    g = CropSpec(tuple(cfg.global_size), tuple(cfg.global_scale), tuple(cfg.aspect))
    loc = CropSpec(tuple(cfg.local_size), tuple(cfg.local_scale), tuple(cfg.aspect))
    return [g, g] + [loc] * cfg.n_local


class _EpochBatches(IterableDataset):
    """Batches `start_batch..n-1` of one rank's epoch; split round-robin across DataLoader workers."""

    def __init__(self, loader: PretrainLoader, epoch: int, start_batch: int) -> None:
        self.cfg, self.seed, self.epoch = loader.cfg, loader.seed, epoch
        self.shards, self.first = loader.shards, loader.first_position
        self.start_batch, self.n_batches = start_batch, loader.batches_per_epoch
        self.specs = crop_specs(loader.cfg)

    def __iter__(self) -> Iterator[PretrainBatch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        order = EpochOrder([s.num_samples for s in self.shards], self.seed, self.epoch, self.cfg.shuffle_group_shards)
        reader = ShardReader(self.shards)
        try:
            for b in range(self.start_batch + wid, self.n_batches, nw):
                yield self._batch(b, order, reader)
        finally:
            reader.close()

    def _sample(self, position: int, image: tuple[Image.Image, tuple[int, int]], key: str) -> SampleViews:
        """Crops, photometric parameters and masks of one decoded sample, each from its own stream."""
        cfg, seed, epoch = self.cfg, self.seed, self.epoch
        img, orig_hw = image
        crops = multicrop(img, orig_hw, numpy_rng(seed, Stream.CROP, epoch, position), self.specs)
        photometric = draw_photometric(numpy_rng(seed, Stream.COLOR, epoch, position), cfg)
        n_patches = cfg.grid_hw[0] * cfg.grid_hw[1]
        if epoch < cfg.pred_start_epoch:
            masks = np.zeros((2, n_patches), dtype=bool)
        else:
            rng = numpy_rng(seed, Stream.MASK, epoch, position)
            masks = view_masks(cfg.grid_hw, 2, cfg.pred_ratio, cfg.pred_ratio_var, rng).numpy()
        return SampleViews(key, crops, photometric, masks)

    def _batch(self, b: int, order: EpochOrder, reader: ShardReader) -> PretrainBatch:
        """Batch `b`: read and decode its positions, refill corrupt slots, build and collate views."""
        bs = self.cfg.batch_size_per_rank
        positions = range(self.first + b * bs, self.first + (b + 1) * bs)
        keys, images, corrupt = [], [], []
        for p in positions:
            shard, member = order.locate(p)
            key, data = reader.read(shard, member)
            name = f"{self.shards[shard].name}/{key}"
            keys.append(name)
            try:
                if data is None:
                    raise ValueError("no jpg member")
                images.append(decode(data, self.specs, self.cfg.decode_draft))
            except _DECODE_ERRORS as e:
                images.append(None)
                corrupt.append(f"{name}: {type(e).__name__}: {e}")
        good = [i for i, im in enumerate(images) if im is not None]
        if not good:
            raise CorruptDataError(f"epoch {self.epoch} batch {b}: all {bs} samples are corrupt (first: {corrupt[0]})")
        samples = []
        for i, p in enumerate(positions):
            # A corrupt slot takes the next good image of the batch (cyclically) but keeps its own
            # position's random draws, so batch size and every other slot are unaffected.
            src = images[i] if images[i] is not None else images[next((j for j in good if j > i), good[0])]
            samples.append(self._sample(p, src, keys[i]))
        return collate(samples, 2, self.epoch, b, float(self.cfg.blur_sigma[1]), corrupt, self.cfg.jitter_impl)


class PretrainLoader:
    """Rank-local, resumable multi-crop stream over a shard set.

    Args:
        cfg: the `data` section of the pretraining config.
        seed: run seed.
        rank: this process's rank.
        world_size: number of ranks.

    Attributes:
        batches_per_epoch: identical on every rank (remainder samples dropped, a different set each epoch).
        corrupt_skipped: undecodable samples met so far by this loader (all epochs).
    """

    def __init__(self, cfg: PretrainDataConfig, seed: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.cfg, self.seed, self.rank, self.world_size = cfg, seed, rank, world_size
        self.shards = read_manifest(cfg.shards, cfg.split)
        self.num_samples = sum(s.num_samples for s in self.shards)
        self.first_position, self.batches_per_epoch = rank_positions(
            self.num_samples, cfg.batch_size_per_rank, rank, world_size
        )
        self.corrupt_skipped = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[PretrainBatch]:
        """Yield batches `start_batch .. batches_per_epoch - 1` of `epoch`, in order.

        Args:
            epoch: epoch number (keys the order and every augmentation draw).
            start_batch: first batch to produce (a resumed run passes the next unseen batch).
        Raises:
            CorruptDataError: once more than `max_corrupt` samples failed to decode.
        """
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} outside 0..{self.batches_per_epoch}")
        if start_batch == self.batches_per_epoch:
            return
        dataset = _EpochBatches(self, epoch, start_batch)
        if self.cfg.num_workers == 0:
            batches: Iterator[PretrainBatch] = iter(dataset)
        else:
            batches = iter(
                DataLoader(
                    dataset,
                    batch_size=None,
                    num_workers=self.cfg.num_workers,
                    prefetch_factor=self.cfg.prefetch_factor,
                    pin_memory=self.cfg.pin_memory and torch.cuda.is_available(),
                    worker_init_fn=_worker_init,
                )
            )
        expected = start_batch
        for batch in batches:
            if batch.index != expected:  # cheap guard on the ordering argument in the module docstring
                raise RuntimeError(f"loader produced batch {batch.index} where {expected} was due")
            self._account(batch)
            expected += 1
            yield batch

    def _account(self, batch: PretrainBatch) -> None:
        for report in batch.corrupt:
            self.corrupt_skipped += 1
            log.warning("skipped corrupt sample %s (%d so far)", report, self.corrupt_skipped)
            if self.corrupt_skipped > self.cfg.max_corrupt:
                raise CorruptDataError(
                    f"more than data.max_corrupt={self.cfg.max_corrupt} corrupt samples; last: {report}"
                )


def _worker_init(worker_id: int) -> None:
    # Workers do PIL/numpy work; torch intra-op threads there would only fight the trainer for cores.
    torch.set_num_threads(1)
    quiet_worker_interrupts()  # the trainer reports Ctrl-C, in one line
