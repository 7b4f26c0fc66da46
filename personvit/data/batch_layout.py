"""Where every sample of a pretraining step comes from, for any world size (elastic resume).

A run fixes its *global batch layout* at its first start, with `W0` ranks of `B0` samples: each epoch
(in the order of `shards.EpochOrder`) is cut into `W0` contiguous blocks ("slots") of `nb * B0`
positions, `nb = total // (W0 * B0)`, and step `b` of the epoch takes positions
`slot * nb * B0 + b * B0 + [0, B0)` of every slot. The step's `G = W0 * B0` samples are numbered by a
global index `j = slot * B0 + offset`, so the step is the same list of positions however many ranks
share it.

A later start with `W` ranks (elastic resume, `--allow-change world_size`) gives rank `r` the global
indices `[r * S, (r + 1) * S)`, `S = G / W`, as `A` micro-batches of `m = S / A` consecutive indices,
`A` the fewest with `m <= data.batch_size_per_rank` that divides `S` (gradient accumulation). At
`W = W0` with the first start's batch size, `S = B0`, `A = 1`: rank `r` reads exactly the contiguous
block it always did, so a run that never changes its world size sees the same stream as before.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchLayout", "LayoutError", "RankShare"]


class LayoutError(ValueError):
    """The global batch cannot be shared by this many ranks, or the data cannot fill one step."""


@dataclass(frozen=True)
class RankShare:
    """One rank's part of every step of a `BatchLayout`.

    Attributes:
        first: global index of the rank's first sample in a step.
        samples: samples per step on this rank (`S`).
        micro_batches: micro-batches per step (`A`), each of `samples // micro_batches` samples.
    """

    first: int
    samples: int
    micro_batches: int

    @property
    def micro_size(self) -> int:
        return self.samples // self.micro_batches


@dataclass(frozen=True)
class BatchLayout:
    """The global batch layout of a run (checkpointed; see the module docstring).

    Args:
        world_size: `W0`, ranks of the run's first start (the number of slots).
        batch_size_per_rank: `B0`, the first start's per-rank batch (samples per slot per step).
        batches_per_epoch: `nb`, steps per epoch.
    """

    world_size: int
    batch_size_per_rank: int
    batches_per_epoch: int

    def __post_init__(self) -> None:
        if min(self.world_size, self.batch_size_per_rank, self.batches_per_epoch) < 1:
            raise LayoutError(f"a batch layout needs positive sizes, got {self.state_dict()}")

    @classmethod
    def fresh(cls, total: int, world_size: int, batch_size_per_rank: int) -> BatchLayout:
        """The layout a run's first start makes over an epoch of `total` samples."""
        steps = total // (world_size * batch_size_per_rank)
        if steps == 0:
            raise LayoutError(
                f"{total} samples cannot fill one batch on each of {world_size} ranks "
                f"(batch {batch_size_per_rank} per rank)"
            )
        return cls(world_size, batch_size_per_rank, steps)

    @property
    def global_batch(self) -> int:
        return self.world_size * self.batch_size_per_rank

    def state_dict(self) -> dict[str, int]:
        return {
            "world_size": self.world_size,
            "batch_size_per_rank": self.batch_size_per_rank,
            "batches_per_epoch": self.batches_per_epoch,
        }

    def share(self, rank: int, world_size: int, max_micro_batch: int) -> RankShare:
        """Rank `rank`'s share of each step when `world_size` ranks run this layout.

        Args:
            rank: the rank.
            world_size: ranks of this start (may differ from the layout's).
            max_micro_batch: largest micro-batch a rank may run (`data.batch_size_per_rank` now).
        Raises:
            LayoutError: `world_size` does not divide the global batch.
        """
        if not 0 <= rank < world_size:
            raise LayoutError(f"rank {rank} outside world size {world_size}")
        g = self.global_batch
        if g % world_size:
            raise LayoutError(
                f"the run's global batch of {g} ({self.world_size} ranks x {self.batch_size_per_rank}) "
                f"cannot be split evenly over {world_size} ranks; use a world size that divides {g}"
            )
        samples = g // world_size
        accumulate = -(-samples // max(1, max_micro_batch))
        while samples % accumulate:  # equal micro-batches, so the mean of their means is the batch mean
            accumulate += 1
        return RankShare(rank * samples, samples, accumulate)

    def position(self, step_in_epoch: int, index: int) -> int:
        """Epoch position of global index `index` of step `step_in_epoch`."""
        slot, offset = divmod(index, self.batch_size_per_rank)
        return (slot * self.batches_per_epoch + step_in_epoch) * self.batch_size_per_rank + offset

    def positions(self, step_in_epoch: int, first: int, count: int) -> list[int]:
        """Epoch positions of global indices `first .. first + count - 1` of step `step_in_epoch`."""
        return [self.position(step_in_epoch, j) for j in range(first, first + count)]
