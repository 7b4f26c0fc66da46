"""Shards and loaders: the shard format and reader, the pretraining loader (multi-crop, photometric
draws, masks, batches; `device_views` on the trainer's device) and the ReID sets and PK sampler.

Public API: the names below (see docs/CONTRIBUTING.md for the data path through these modules).
"""

from __future__ import annotations

from personvit.lazy_exports import lazy_getattr

# Public name -> the module that owns it, imported on first use (personvit.lazy_exports).
_EXPORTS = {
    "BatchLayout": "personvit.data.batch_layout",
    "CorruptDataError": "personvit.data.pretrain_loader",
    "EpochOrder": "personvit.data.shards",
    "EvalTransform": "personvit.data.reid_transforms",
    "KeyBatchSampler": "personvit.data.samplers",
    "LayoutError": "personvit.data.batch_layout",
    "MANIFEST_NAME": "personvit.data.format",
    "PKSampler": "personvit.data.samplers",
    "PretrainBatch": "personvit.data.collate",
    "PretrainLoader": "personvit.data.pretrain_loader",
    "ReIDSplit": "personvit.data.reid",
    "ReIDTestDataset": "personvit.data.reid",
    "ReIDTrainDataset": "personvit.data.reid",
    "SHARD_NAME": "personvit.data.format",
    "ShardError": "personvit.data.shards",
    "ShardReader": "personvit.data.shards",
    "TarReadError": "personvit.data.tar_reader",
    "TrainTransform": "personvit.data.reid_transforms",
    "device_views": "personvit.data.device_augment",
    "fresh_layout": "personvit.data.pretrain_loader",
    "iter_members": "personvit.data.tar_reader",
    "read_manifest": "personvit.data.shards",
    "read_reid_split": "personvit.data.reid",
    "sample_json": "personvit.data.format",
    "shard_name": "personvit.data.format",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
