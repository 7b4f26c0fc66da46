"""MSMT17 (V1 and V2): image folders plus list files of `relpath pid` lines.

V1 keeps images in `train/` and `test/`, V2 in `mask_train_v2/` and `mask_test_v2/`; both ship
`list_{train,val,query,gallery}.txt`. The training split is train + val (32,621 images, 1,041 ids),
as in the usual protocol. The camera is the third `_` field of the file name, 1-based
(`0000_000_01_0303morning_0015_0.jpg` -> camid 0).
"""

from __future__ import annotations

from pathlib import Path

from shard_tools.sources.base import FolderReader, Listing, Skip, SourceError, find_root
from shard_tools.sources.table import TableBuilder

# (train folder, test folder) per release
VERSIONS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
LISTS = {"train": ["list_train.txt", "list_val.txt"], "query": ["list_query.txt"], "gallery": ["list_gallery.txt"]}


def camera_of(name: str) -> int:
    """0-based camera from an MSMT17 file name; ValueError when the name has no camera field."""
    return int(Path(name).name.split("_")[2]) - 1


class MSMT17Source(FolderReader):
    """MSMT17 rooted at `src` (or `src/MSMT17_V1`, `src/MSMT17_V2`, `src/MSMT17`).

    Args:
        src: the dataset folder or its parent.
    """

    name = "msmt17"

    def __init__(self, src: str | Path):
        src = Path(src)
        self.root = find_root(src, ["list_train.txt"], ["MSMT17_V1", "MSMT17_V2", "MSMT17"])
        found = [v for v, (tr, te) in VERSIONS.items() if (self.root / tr).is_dir() and (self.root / te).is_dir()]
        if not self.root.is_dir():
            raise SourceError(f"msmt17: source folder {src} does not exist")
        if not found:
            raise SourceError(f"msmt17: expected train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2) under {self.root}")
        missing = [f for fs in LISTS.values() for f in fs if not (self.root / f).is_file()]
        if missing:
            raise SourceError(f"msmt17: expected list files {', '.join(missing)} under {self.root}")
        self.version = found[0]

    def list(self) -> Listing:
        table, skipped = TableBuilder(), []
        train_dir, test_dir = VERSIONS[self.version]
        for split, files in LISTS.items():
            folder = train_dir if split == "train" else test_dir
            for list_file in files:
                lines = (self.root / list_file).read_text().splitlines()
                for n, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    parts = line.split()
                    try:
                        rel, pid = parts[0], int(parts[1])
                        camid = camera_of(rel)
                    except (IndexError, ValueError):
                        skipped.append(Skip(split, f"{list_file}:{n}", f"malformed list line {line.strip()!r}"))
                        continue
                    table.add(split, f"{folder}/{rel}", pid, camid)
        return Listing(table.build(), skipped)  # list files may repeat a line: planning drops repeats
