"""Deterministic streaming multi-crop loader for pretraining.

Every random choice is keyed by the sample's *global position* in the epoch (see `shards.py` for the
order): crops by `numpy_rng(seed, Stream.CROP, epoch, position)`, photometric parameters by
Stream.COLOR, masks by Stream.MASK. Which positions a rank reads at each step is the run's
`BatchLayout` (batch_layout.py): a rank's step is `A` micro-batches (1 unless the world size changed
since the run's first start), item `i = b * A + k` being micro-batch `k` of step `b`. Each item is
built entirely by one worker; worker `w` of `K` builds items `first + w, + w + K, ...`, which torch's
DataLoader hands back in exactly that round-robin order. So the stream is the same for any
`num_workers`, and resuming at a step neither reads nor decodes skipped samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from personvit.config.data import PretrainDataConfig
from personvit.data.batch_layout import BatchLayout, LayoutError
from personvit.data.collate import PretrainBatch, SampleViews, collate
from personvit.data.multicrop import CropSpec, decode, multicrop
from personvit.data.photometric import draw_photometric
from personvit.data.shards import EpochOrder, ShardError, ShardReader, read_manifest
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
    """Micro-batches of one rank's epoch from step `start_batch` on; split round-robin across workers."""

    def __init__(self, loader: PretrainLoader, epoch: int, start_batch: int) -> None:
        self.cfg, self.seed, self.epoch = loader.cfg, loader.seed, epoch
        self.shards, self.layout, self.share = loader.shards, loader.layout, loader.share
        self.start_item = start_batch * loader.share.micro_batches
        self.n_items = loader.batches_per_epoch * loader.share.micro_batches
        self.specs = crop_specs(loader.cfg)

    def __iter__(self) -> Iterator[PretrainBatch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        order = EpochOrder([s.num_samples for s in self.shards], self.seed, self.epoch, self.cfg.shuffle_group_shards)
        reader = ShardReader(self.shards)
        try:
            for item in range(self.start_item + wid, self.n_items, nw):
                yield self._batch(item, order, reader)
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

    def _batch(self, item: int, order: EpochOrder, reader: ShardReader) -> PretrainBatch:
        """Micro-batch `item`: read and decode its positions, refill corrupt slots, build and collate views."""
        b, k = divmod(item, self.share.micro_batches)
        m = self.share.micro_size
        first = self.share.first + k * m
        positions = self.layout.positions(b, first, m)
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
            raise CorruptDataError(f"epoch {self.epoch} batch {b}: all {m} samples are corrupt (first: {corrupt[0]})")
        samples = []
        for i, p in enumerate(positions):
            # A corrupt slot takes the next good image of the batch (cyclically) but keeps its own
            # position's random draws, so batch size and every other slot are unaffected.
            src = images[i] if images[i] is not None else images[next((j for j in good if j > i), good[0])]
            samples.append(self._sample(p, src, keys[i]))
        return collate(
            samples, 2, self.epoch, b, float(self.cfg.blur_sigma[1]), corrupt, self.cfg.jitter_impl,
            positions=positions, first_index=first, micro=k, micro_batches=self.share.micro_batches,
        )  # fmt: skip


def fresh_layout(cfg: PretrainDataConfig, num_samples: int, world_size: int) -> BatchLayout:
    """The layout a run's first start makes; too few samples is a `ShardError` naming the shard folder."""
    try:
        return BatchLayout.fresh(num_samples, world_size, cfg.batch_size_per_rank)
    except LayoutError as e:
        raise ShardError(f"{cfg.shards}: {e}") from None


class PretrainLoader:
    """Rank-local, resumable multi-crop stream over a shard set.

    Args:
        cfg: the `data` section of the pretraining config.
        seed: run seed.
        rank: this process's rank.
        world_size: number of ranks.
        shards: the split's shards when the caller has read the manifest already (else read here).
        layout: the run's global batch layout (from its checkpoint on a resume); None makes the
            first start's, `world_size` slots of `cfg.batch_size_per_rank`.

    Attributes:
        layout: the global batch layout; `share`: this rank's part of each step.
        batches_per_epoch: steps per epoch, identical on every rank (remainder samples dropped, a
            different set each epoch).
        corrupt_skipped: undecodable samples met so far by this loader (all epochs).
    Raises:
        ShardError: a bad shard set, or too few samples for one step.
        LayoutError: `world_size` cannot share `layout`'s global batch.
    """

    def __init__(
        self, cfg: PretrainDataConfig, seed: int, rank: int, world_size: int, layout: BatchLayout | None = None,
        shards: list | None = None,
    ) -> None:  # fmt: skip
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.cfg, self.seed, self.rank, self.world_size = cfg, seed, rank, world_size
        self.shards = shards if shards is not None else read_manifest(cfg.shards, cfg.split)
        self.num_samples = sum(s.num_samples for s in self.shards)
        if layout is None:
            layout = fresh_layout(cfg, self.num_samples, world_size)
        elif layout.batches_per_epoch * layout.global_batch > self.num_samples:
            raise ShardError(f"{cfg.shards}: {self.num_samples} samples cannot hold the run's layout {layout}")
        self.layout = layout
        self.share = layout.share(rank, world_size, cfg.batch_size_per_rank)
        self.batches_per_epoch = layout.batches_per_epoch
        self.corrupt_skipped = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[PretrainBatch]:
        """Yield the micro-batches of steps `start_batch .. batches_per_epoch - 1` of `epoch`, in order.

        With one micro-batch per step (the world size of the run's first start) these are the steps'
        batches; `iter_steps` groups them by step in any case.

        Args:
            epoch: epoch number (keys the order and every augmentation draw).
            start_batch: first step to produce (a resumed run passes the next unseen step).
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
        a = self.share.micro_batches
        expected = start_batch * a
        for batch in batches:
            # Cheap guard on the ordering argument in the module docstring.
            if (batch.index, batch.micro) != divmod(expected, a):
                raise RuntimeError(
                    f"loader produced step {batch.index} micro-batch {batch.micro} where item {expected} was due"
                )
            self._account(batch)
            expected += 1
            yield batch

    def iter_steps(self, epoch: int, start_batch: int = 0) -> Iterator[list[PretrainBatch]]:
        """Like `iter_epoch`, one list of the step's `share.micro_batches` micro-batches per step."""
        step: list[PretrainBatch] = []
        for batch in self.iter_epoch(epoch, start_batch):
            step.append(batch)
            if len(step) == self.share.micro_batches:
                yield step
                step = []

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
