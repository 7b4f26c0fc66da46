"""PK sampling for metric learning: P identities x K images per batch, deterministic per (seed, epoch).

The epoch's batches follow the classic `RandomIdentitySampler` (used by BoT / TransReID and the
PersonViT code): each identity's images are shuffled (drawn with replacement up to K when it has
fewer) and cut into chunks of K; batches take one chunk from each of P distinct identities that still
have chunks, until fewer than P remain. Here the whole epoch is a pure function of (seed, epoch), so
resuming at batch b of epoch e needs only (e, b).

Across ranks, every rank computes the same global batches and takes its own P / world_size
identities of each one: equal batch counts on every rank (no DDP hang at the epoch's end), and each
rank's batch still holds K images of each of its identities, so batch-hard mining works locally.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from personvit.rng import Stream, numpy_rng

if TYPE_CHECKING:
    from personvit.config.finetune import FinetuneTrainConfig

class PKSampler:
    """Batches of `num_ids` identities x `num_instances` images.

    Args:
        pids: [N] identity (or class label) of every sample.
        num_ids: identities per global batch (P).
        num_instances: images per identity (K).
        seed: run seed.
        rank, world_size: this process's slice of each batch; `num_ids` must divide by `world_size`.
        max_batches: cap on batches per epoch (0 = all).
    """

    @classmethod
    def from_config(cls, labels, train: FinetuneTrainConfig, seed: int, rank: int = 0, world_size: int = 1) -> PKSampler:
        """The PK sampler of a fine-tuning run's `train` section (num_ids, num_instances, max_steps_per_epoch)."""
        return cls(labels, train.num_ids, train.num_instances, seed, rank, world_size, train.max_steps_per_epoch)

    def __init__(self, pids: np.ndarray, num_ids: int, num_instances: int, seed: int, rank: int = 0,
                 world_size: int = 1, max_batches: int = 0):
        pids = np.asarray(pids).ravel()
        if num_ids % world_size:
            raise ValueError(f"num_ids {num_ids} must be divisible by the world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        unique = np.unique(pids)
        if unique.size < num_ids:
            raise ValueError(f"the training set has {unique.size} identities, fewer than num_ids={num_ids} per batch")
        self.num_ids, self.num_instances, self.seed = num_ids, num_instances, seed
        self.rank, self.world_size, self.max_batches = rank, world_size, max_batches
        order = np.argsort(pids, kind="stable")
        bounds = np.flatnonzero(np.diff(pids[order])) + 1
        # Indices of each identity in dataset order, identities in sorted order.
        self.groups: list[np.ndarray] = np.split(order, bounds)
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def batch_size(self) -> int:
        """Global batch size P x K."""
        return self.num_ids * self.num_instances

    @property
    def rank_batch_size(self) -> int:
        return self.batch_size // self.world_size

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """The global batches of `epoch`: [num_batches, P * K] sample indices, identity-major.

        Args:
            epoch: epoch number (with the seed, it fixes every draw).
        """
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = numpy_rng(self.seed, Stream.SAMPLER, epoch, 0)
        k = self.num_instances
        chunks: list[list[np.ndarray]] = []
        for idx in self.groups:
            if idx.size < k:
                idx = rng.choice(idx, size=k, replace=True)
            else:
                idx = rng.permutation(idx)
            n = idx.size // k
            chunks.append([idx[i * k:(i + 1) * k] for i in range(n)])
        left = np.array([len(c) for c in chunks])
        taken = np.zeros(len(chunks), dtype=np.int64)
        batches = []
        while True:
            avail = np.flatnonzero(left > 0)
            if avail.size < self.num_ids or (self.max_batches and len(batches) >= self.max_batches):
                break
            chosen = rng.choice(avail, size=self.num_ids, replace=False)
            batches.append(np.concatenate([chunks[c][taken[c]] for c in chosen]))
            taken[chosen] += 1
            left[chosen] -= 1
        if not batches:
            raise ValueError(f"no full batch of {self.num_ids} identities x {k} images can be formed")
        out = np.stack(batches).astype(np.int64)
        self._cache = (epoch, out)
        return out

    def rank_batches(self, epoch: int) -> np.ndarray:
        """This rank's part of each global batch: [num_batches, P * K / world_size]."""
        b = self.rank_batch_size
        return self.epoch_batches(epoch)[:, self.rank * b:(self.rank + 1) * b]

    def iter_keys(self, epoch: int, start_batch: int = 0) -> Iterator[list[tuple[int, int, int]]]:
        """Yield this rank's batches from `start_batch` on as `(epoch, position, index)` triples.

        `position` is the sample's place in the epoch's *global* batch list, so its augmentation is
        the same for any world size split and any resume point.
        """
        batches = self.epoch_batches(epoch)
        b = self.rank_batch_size
        for i in range(start_batch, batches.shape[0]):
            base = i * self.batch_size + self.rank * b
            yield [(epoch, base + j, int(batches[i, self.rank * b + j])) for j in range(b)]


class KeyBatchSampler:
    """A DataLoader `batch_sampler` over `PKSampler.iter_keys` for one epoch (from a resume point).

    Args:
        sampler: the PK sampler.
        epoch: epoch to iterate.
        start_batch: first batch (resume).
    """

    def __init__(self, sampler: PKSampler, epoch: int, start_batch: int = 0):
        self.sampler, self.epoch, self.start_batch = sampler, epoch, start_batch
        self._num = sampler.epoch_batches(epoch).shape[0]

    def __len__(self) -> int:
        return max(self._num - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return self.sampler.iter_keys(self.epoch, self.start_batch)
