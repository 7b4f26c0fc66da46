"""Whose files are in a pack's output folder: refuse to mix a new shard set into someone else's files.

A pack may write into an empty or missing folder, or resume its own unfinished (or finished) work:
`.pack/plan.json` with the same plan fingerprint, the planned shards, `manifest.json` and their
temporaries. Anything else (shards of another pack, a manifest without pack state, unrelated files)
is refused with the names found; `--overwrite` replaces a shard set on purpose, but never deletes
files that are not part of one.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Collection
from pathlib import Path

from personvit.data.format import SHARD_NAME
from shard_tools.manifest import MANIFEST, STATE
from shard_tools.sources.base import SourceError

TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.tmp-.+$")  # personvit.atomic_write.temp_path
MAX_NAMED = 5


def _plan_fingerprint(out: Path) -> str | None:
    """The fingerprint in `out/.pack/plan.json`, '' when that file is unreadable, None when absent."""
    path = out / STATE / "plan.json"
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("fingerprint", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def foreign_entries(out: Path, fingerprint: str, planned: Collection[str]) -> list[str]:
    """Names in `out` that this pack (plan `fingerprint`, shard names `planned`) did not write.

    Args:
        out: the output folder (may be missing).
        fingerprint: the plan fingerprint of the pack about to run.
        planned: every shard name of that plan (all array tasks').
    """
    if not out.is_dir():
        return []
    found = _plan_fingerprint(out)
    ours = found == fingerprint
    own_names = {*planned, MANIFEST} if ours else set()
    foreign = []
    for p in sorted(out.iterdir()):
        name = p.name
        if name == STATE:
            # No plan.json yet: another array task of this pack may be writing it right now.
            if found is not None and not ours:
                foreign.append(f"{STATE}/ (state of a different pack)")
            continue
        temp = TEMP_NAME.match(name)
        if name in own_names or (temp and temp["final"] in own_names):
            continue
        foreign.append(name + ("/" if p.is_dir() else ""))
    return foreign


def _named(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def _is_shard_set_entry(name: str) -> bool:
    bare = name.rstrip("/").split(" ")[0].rstrip("/")
    temp = TEMP_NAME.match(bare)
    bare = temp["final"] if temp else bare
    return bare in (MANIFEST, STATE) or bool(SHARD_NAME.match(bare))


def claim_out_folder(out: Path, fingerprint: str, planned: Collection[str], overwrite: bool = False) -> None:
    """Make sure `out` holds nothing but this pack's own files; with `overwrite`, delete a foreign shard set.

    Args:
        out: the output folder.
        fingerprint, planned: the plan about to be written (see `foreign_entries`).
        overwrite: delete shards, manifest and pack state that another pack left (never other files).
    Raises:
        SourceError: one line naming what was found.
    """
    foreign = foreign_entries(out, fingerprint, planned)
    if not foreign:
        return
    if not overwrite:
        raise SourceError(f"{out}: holds {_named(foreign)} (not written by an unfinished pack of this source); "
                          "use --overwrite to replace them")
    others = [n for n in foreign if not _is_shard_set_entry(n)]
    if others:
        raise SourceError(f"{out}: holds {_named(others)}, which are not part of a shard set; --overwrite replaces "
                          "only shards, manifest and pack state: move them or choose another folder")
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
