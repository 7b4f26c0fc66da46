"""Market-1501: `0002_c1s1_000451_03.jpg` = pid 2, camera 1 (sequence 1, frame 451, box 3)."""

from __future__ import annotations

from pathlib import Path

from shard_tools.sources.reid_folders import ReidFolderSource

# Real Market-1501 has cameras 1-6; the one-digit field allows up to 9 (synthetic sets use more).
PATTERN = r"^(-?\d+)_c(\d)s\d+_\d+_\d+\.jpg$"


def market1501(src: str | Path) -> ReidFolderSource:
    """The Market-1501 source rooted at `src` (or `src/Market-1501-v15.09.15`)."""
    return ReidFolderSource(src, "market1501", PATTERN, num_cams=9,
                            root_names=["Market-1501-v15.09.15", "Market-1501", "market1501"])
