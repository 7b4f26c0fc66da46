"""The shard set's manifest, the per-shard journal that makes packing resumable, and their merge.

The shard set's layout (file names, manifest fields, sample members) is `personvit.data.format`.

While packing, every finished shard gets a journal entry `OUT/.pack/shards/<name>.json` (written
after the shard's rename, atomically), and every task writes the same `OUT/.pack/plan.json`.
`merge` turns plan + journal into `manifest.json` once every planned shard is there; it runs
automatically at the end of any pack run (or array task) that finds the set complete, and as
`shard-tools merge OUT` after a Slurm array.
"""

from __future__ import annotations

import json
from pathlib import Path

from personvit.atomic_write import atomic_write
from personvit.data.format import FORMAT, MANIFEST_NAME
from shard_tools import __version__
from shard_tools.sources.base import SourceError

MANIFEST = MANIFEST_NAME
STATE = ".pack"


def atomic_write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically (`personvit.atomic_write`); an OSError names `path`."""
    atomic_write(path, json.dumps(obj, indent=1) + "\n", plain_oserror=True)


def journal_path(out: Path, shard_name: str) -> Path:
    return out / STATE / "shards" / f"{shard_name}.json"


def write_plan_info(out: Path, info: dict) -> None:
    """Record the plan (fingerprint, shard names per split, listing skips); refuse a different one.

    Args:
        out: the shard folder.
        info: `fingerprint`, `source`, `source_root`, `options`, `shards` {split: [names]},
            `skipped`, `dropped`.
    """
    path = out / STATE / "plan.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("fingerprint") != info["fingerprint"]:
            raise SourceError(f"{out} holds shards of a different pack (source, options or input list differ); "
                              "use a new output folder or delete it")
        return
    atomic_write_json(path, info)


def read_plan_info(out: Path) -> dict:
    path = out / STATE / "plan.json"
    if not path.is_file():
        raise SourceError(f"{out}: no {STATE}/plan.json; run `shard-tools pack` into this folder first")
    return json.loads(path.read_text())


def load_journal(out: Path, shard_name: str, fingerprint: str) -> dict | None:
    """The journal entry of a finished shard, or None when the shard must be (re)written.

    A shard counts as finished when its entry belongs to this plan and the tar has the recorded
    size (a kill between rename and journal write, or a deleted tar, means: write it again).
    """
    jp = journal_path(out, shard_name)
    try:
        entry = json.loads(jp.read_text())
    except (OSError, ValueError):
        return None
    tar = out / shard_name
    if entry.get("fingerprint") != fingerprint or not tar.is_file() or tar.stat().st_size != entry.get("bytes"):
        return None
    return entry


def build_manifest(info: dict, entries: dict[str, dict]) -> dict:
    """The manifest from the plan info and the journal entry of every planned shard.

    Args:
        info: as stored by `write_plan_info`.
        entries: shard name -> journal entry, for every shard in `info["shards"]`.
    """
    splits: dict[str, dict] = {}
    skipped = list(info["skipped"])
    for split, names in info["shards"].items():
        pids: set[int] = set()
        cams: set[int] = set()
        shards = []
        for name in names:
            e = entries[name]
            shards.append({k: e[k] for k in ("name", "samples", "bytes", "sha256")})
            pids.update(p for p in e["pids"] if p >= 0)
            cams.update(c for c in e["cams"] if c >= 0)
            skipped.extend(e["skipped"])
        splits[split] = {
            "samples": sum(s["samples"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "jpeg_bytes": sum(entries[n]["jpeg_bytes"] for n in names),
            "num_shards": len(shards),
            "num_ids": len(pids),
            "num_cams": len(cams),
            "shards": shards,
        }
    return {
        "format": FORMAT,
        "tool": f"shard_tools {__version__}",
        "source": info["source"],
        "source_root": info["source_root"],
        "options": info["options"],
        "splits": splits,
        "dropped": info["dropped"],
        "num_skipped": len(skipped),
        "skipped": skipped,
    }


def merge(out: str | Path) -> dict:
    """Write `manifest.json` from the plan and the journal of every shard; error when any is missing.

    Args:
        out: the shard folder of a (possibly array-split) pack.
    """
    out = Path(out)
    info = read_plan_info(out)
    entries, missing = {}, []
    for names in info["shards"].values():
        for name in names:
            e = load_journal(out, name, info["fingerprint"])
            if e is None:
                missing.append(name)
            else:
                entries[name] = e
    if missing:
        raise SourceError(f"{out}: {len(missing)} planned shard(s) not finished (first: {missing[0]}); "
                          "rerun the pack (or the array tasks) with the same options")
    manifest = build_manifest(info, entries)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def read_manifest(out: str | Path) -> dict:
    """The manifest of a shard folder; SourceError names the folder when it is missing or invalid."""
    path = Path(out) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(f"{path} not found: not a packed shard folder (or the pack is unfinished)") from None
    except ValueError as e:
        raise SourceError(f"{path}: invalid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise SourceError(f"{path}: unknown format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest
