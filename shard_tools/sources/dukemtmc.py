"""DukeMTMC-reID and Occluded-Duke: `0001_c2_f0046182.jpg` = pid 1, camera 2 (cameras 1-8).

Occluded-Duke reuses Duke's gallery and naming with occluded queries/training images, so both
sources share this parser and differ only in the folder they are released under.
"""

from __future__ import annotations

from pathlib import Path

from shard_tools.sources.reid_folders import ReidFolderSource

PATTERN = r"^(-?\d+)_c(\d+)_f\d+\.jpg$"


def dukemtmc(src: str | Path) -> ReidFolderSource:
    """DukeMTMC-reID rooted at `src` (or `src/DukeMTMC-reID`)."""
    return ReidFolderSource(src, "dukemtmc", PATTERN, num_cams=8, root_names=["DukeMTMC-reID", "dukemtmc-reid"])


def occluded_duke(src: str | Path) -> ReidFolderSource:
    """Occluded-Duke rooted at `src` (or `src/Occluded_Duke`)."""
    return ReidFolderSource(src, "occluded-duke", PATTERN, num_cams=8, root_names=["Occluded_Duke", "occluded_duke"])
