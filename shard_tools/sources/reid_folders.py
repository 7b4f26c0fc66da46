"""The three-folder ReID layout shared by Market-1501, DukeMTMC-reID and Occluded-Duke.

`bounding_box_train/` -> split `train`, `query/` -> `query`, `bounding_box_test/` -> `gallery`;
pid and camera are parsed from each file name. Junk images (pid -1) are dropped and counted;
distractors (pid 0) stay in the gallery, as in the Market-1501 protocol.
"""

from __future__ import annotations

import re
from pathlib import Path

from shard_tools.sources.base import FolderReader, Listing, Skip, find_root, require_dirs, walk_files
from shard_tools.sources.table import TableBuilder

FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
JUNK_PID = -1


class ReidFolderSource(FolderReader):
    """A dataset in the three-folder layout.

    Args:
        src: the dataset folder, or a folder holding it under one of `root_names`.
        name: the source name written in every sample's json (`market1501`, ...).
        pattern: regex with groups (pid, camera) that a file name must match in full.
        num_cams: cameras are 1..num_cams in file names (stored 0-based).
        root_names: the folder names the dataset is released under.
    """

    def __init__(self, src: str | Path, name: str, pattern: str, num_cams: int, root_names: list[str]):
        self.name = name
        self.pattern = re.compile(pattern)
        self.num_cams = num_cams
        self.root = find_root(Path(src), list(FOLDERS), root_names)
        require_dirs(self.root, list(FOLDERS), name)

    def parse(self, filename: str) -> tuple[int, int] | str:
        """(pid, 0-based camid) from a file name, or the reason it is not a record."""
        m = self.pattern.match(filename)
        if m is None:
            return f"name does not match the {self.name} pattern"
        pid, cam = int(m.group(1)), int(m.group(2))
        if not 1 <= cam <= self.num_cams:
            return f"camera {cam} outside 1..{self.num_cams}"
        return pid, cam - 1

    def list(self) -> Listing:
        table, skipped, dropped = TableBuilder(), [], {}
        for folder, split in FOLDERS.items():
            for rel in walk_files(self.root / folder):
                path = f"{folder}/{rel}"
                parsed = self.parse(rel.rpartition("/")[2])
                if isinstance(parsed, str):
                    skipped.append(Skip(split, path, parsed))
                    continue
                pid, camid = parsed
                if pid == JUNK_PID:
                    dropped["junk (pid -1)"] = dropped.get("junk (pid -1)", 0) + 1
                    continue
                table.add(split, path, pid, camid)
        return Listing(table.build(), skipped, dropped, distinct=True)
