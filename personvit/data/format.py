"""The shard set format, defined once: written by `shard_tools`, read by `personvit.data` (torch-free).

A shard set is a folder of `{split}-NNNNNN.tar` files and `manifest.json`:

    {"format": "personvit-shards/1", "tool": "shard_tools 0.1.0",
     "source": "market1501", "source_root": "/abs/path", "options": {maxcount, fraction, ...},
     "splits": {"train": {"samples", "bytes", "jpeg_bytes", "num_shards", "num_ids", "num_cams",
                          "shards": [{"name", "samples", "bytes", "sha256"}, ...]}, ...},
     "dropped": {"junk (pid -1)": 2, ...}, "num_skipped": 1,
     "skipped": [{"split", "path", "reason"}, ...]}

Each sample is two tar members `KEY.jpg` (the source bytes, unchanged) and `KEY.json`
(`{"camid", "dataset", "path", "pid"}`, path relative to the source root; pid/camid -1 when
unlabeled). `num_ids` counts pids >= 0 (Market distractors, pid 0, count as one id).
"""

from __future__ import annotations

import json
import re

__all__ = ["FORMAT", "IMAGE_EXT", "MANIFEST_NAME", "META_EXT", "META_KEYS", "SAMPLE_EXTS", "SHARD_NAME", "sample_json",
           "shard_name", "split_member_name"]

FORMAT = "personvit-shards/1"
MANIFEST_NAME = "manifest.json"
IMAGE_EXT = "jpg"
META_EXT = "json"
SAMPLE_EXTS = frozenset({IMAGE_EXT, META_EXT})  # the members of every sample, no more, no fewer
META_KEYS = frozenset({"camid", "dataset", "path", "pid"})  # of the `json` member
SHARD_NAME = re.compile(r"^[a-z]+-\d{6}\.tar$")


def shard_name(split: str, index: int) -> str:
    """`train-000003.tar`: the name of shard `index` of `split`."""
    return f"{split}-{index:06d}.tar"


def sample_json(source: str, pid: int, camid: int, path: str) -> bytes:
    """The `json` member: compact and key-sorted, so identical samples give identical bytes.

    Formatted directly (json.dumps of a dict costs ~10 us, a tenth of the per-image budget);
    equal to `json.dumps(..., sort_keys=True, separators=(",", ":"))`.

    Args:
        source: the dataset name; pid, camid: -1 when unlabeled; path: relative to the source root.
    """
    return (f'{{"camid":{int(camid)},"dataset":{json.dumps(source)},"path":{json.dumps(path)},'
            f'"pid":{int(pid)}}}').encode()


def split_member_name(name: str) -> tuple[str, str]:
    """(sample key, lower-case extension) of a tar member, as webdataset groups them.

    The key is the member path up to the first dot of its basename: `a/b.jpg` -> (`a/b`, `jpg`).
    """
    d, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()
