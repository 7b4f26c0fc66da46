"""Per-sample multi-crop output and its batched form, grouped by resolution.

`PretrainBatch` is the contract between the loader and the trainer: uint8 crops (cheap to move,
~4x smaller than float), the photometric parameters that travel with them, and the student masks.
`personvit.data.device_augment.device_views` turns it into the normalised float views the
student/teacher consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import get_worker_info

from personvit.data.photometric import PhotometricParams


@dataclass
class SampleViews:
    """One sample after the worker-side work.

    Attributes:
        key: sample key in its shard.
        crops: 2 + n_local uint8 [3, H, W] tensors, globals first.
        photometric: `draw_photometric` output (leading dim V).
        masks: bool [2, N] student masks of the two global views.
    """

    key: str
    crops: list[torch.Tensor]
    photometric: dict[str, np.ndarray]
    masks: np.ndarray


@dataclass
class PretrainBatch:
    """One step's data for one rank.

    Attributes:
        global_crops: 2 uint8 tensors [B, 3, H, W].
        local_crops: n_local uint8 tensors [B, 3, h, w].
        photometric: parameters of every view, leading dims [V, B] (globals first).
        masks: bool [2, B, N] student masks (all False for views drawn unmasked).
        keys: sample keys, `shard/key`.
        epoch: epoch of the batch.
        index: step index inside the epoch (resume position = index + 1).
        max_sigma: blur kernel size parameter (the config's largest sigma; read by `device_views`).
        jitter_impl: `exact` or `matrix` colour jitter (see `device_augment.apply_photometric`).
        corrupt: `shard/key: reason` of samples that failed to decode; their slots hold a copy of
            another image of the batch with the slot's own random draws.
        positions: epoch position of each sample (keys its random draws, drop path included).
        first_index: global index of the first sample in its step (`batch_layout.py`).
        micro, micro_batches: this micro-batch's number among the step's micro-batches on this rank.
    """

    global_crops: list[torch.Tensor]
    local_crops: list[torch.Tensor]
    photometric: PhotometricParams
    masks: torch.Tensor
    keys: list[str]
    epoch: int
    index: int
    max_sigma: float = 2.0
    corrupt: list[str] = field(default_factory=list)
    jitter_impl: str = "exact"
    positions: list[int] = field(default_factory=list)
    first_index: int = 0
    micro: int = 0
    micro_batches: int = 1

    @property
    def batch_size(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> PretrainBatch:
        """Called by DataLoader(pin_memory=True) on the main process side."""
        pin = lambda t: t.pin_memory()  # noqa: E731
        return replace(
            self,
            global_crops=[pin(t) for t in self.global_crops],
            local_crops=[pin(t) for t in self.local_crops],
            photometric=self.photometric.map(pin),
            masks=pin(self.masks),
        )


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, straight into shared memory inside a DataLoader worker.

    A worker's batch crosses to the training process through shared memory; stacking into it
    directly saves the extra copy pickling would make (torch's default_collate does the same).
    """
    if get_worker_info() is None:
        return torch.stack(tensors)
    first = tensors[0]
    storage = first._typed_storage()._new_shared(len(tensors) * first.numel(), device=first.device)
    out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def collate(
    samples: list[SampleViews], n_global: int, epoch: int, index: int, max_sigma: float, corrupt: list[str],
    jitter_impl: str = "exact", *, positions: list[int] | None = None, first_index: int = 0, micro: int = 0,
    micro_batches: int = 1,
) -> PretrainBatch:
    """Stack samples into a `PretrainBatch`.

    Args:
        samples: the batch's samples, in position order.
        n_global: number of global views (the first crops of each sample).
        epoch, index: batch identity.
        max_sigma: forwarded for `device_views`.
        corrupt: corrupt-sample reports of this batch.
        jitter_impl: forwarded for `device_views`.
        positions, first_index, micro, micro_batches: the samples' place in the step (`PretrainBatch`).
    """
    n_views = len(samples[0].crops)
    crops = [_stack([s.crops[v] for s in samples]) for v in range(n_views)]
    photometric = PhotometricParams(
        **{
            k: torch.from_numpy(np.stack([s.photometric[k] for s in samples], axis=1))  # [V, B, ...]
            for k in samples[0].photometric
        }
    )
    masks = torch.from_numpy(np.stack([s.masks for s in samples], axis=1))  # [2, B, N]
    return PretrainBatch(
        crops[:n_global], crops[n_global:], photometric, masks, [s.key for s in samples], epoch, index, max_sigma, corrupt,
        jitter_impl, list(positions or []), first_index, micro, micro_batches,
    )
