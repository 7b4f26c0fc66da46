"""`verify`: re-read every shard and check it against the manifest."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
from pathlib import Path

from PIL import Image

from personvit.data.format import IMAGE_EXT, META_EXT, META_KEYS, SAMPLE_EXTS
from personvit.data.tar_reader import TarReadError, iter_members
from personvit.runlog import ProgressReporter
from shard_tools.manifest import read_manifest

JSON_KEYS = META_KEYS


def verify_shard(path: Path, samples: int, nbytes: int, sha256: str, decode: bool = True) -> str | None:
    """The first problem of one shard, or None when it matches its manifest entry.

    Args:
        path: the tar file.
        samples, nbytes, sha256: what the manifest promises.
        decode: fully decode every `jpg` (else only check the tar structure and the json).
    """
    name = path.name
    if not path.is_file():
        return f"{name}: missing"
    size = path.stat().st_size
    if size != nbytes:
        return f"{name}: {size} bytes, manifest says {nbytes}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != sha256:
        return f"{name}: sha256 mismatch (modified since packing)"
    keys: dict[str, set[str]] = {}
    try:
        for m in iter_members(path, read_data=True):
            if not m.is_file:
                return f"{name}: member {m.name} is not a regular file"
            key, _, ext = m.name.partition(".")  # stricter than the readers' grouping: flat, exact case
            if "/" in key or not ext:
                return f"{name}: member {m.name} is not `key.ext`"
            keys.setdefault(key, set()).add(ext)
            try:
                if ext == IMAGE_EXT and decode:
                    with Image.open(io.BytesIO(m.data), formats=["JPEG"]) as im:
                        im.load()
                elif ext == META_EXT:
                    meta = json.loads(m.data)
                    if not JSON_KEYS <= meta.keys():
                        return f"{name}: {m.name} lacks {sorted(JSON_KEYS - meta.keys())}"
            except Exception as e:  # any decode error type means a bad member
                return f"{name}: {m.name} does not decode ({type(e).__name__}: {e})"
    except TarReadError as e:
        return f"{name}: unreadable tar ({type(e.cause).__name__}: {e.cause})"
    incomplete = [k for k, exts in keys.items() if exts != SAMPLE_EXTS]
    if incomplete:
        return f"{name}: sample {incomplete[0]} has members {sorted(keys[incomplete[0]])}, expected jpg + json"
    if len(keys) != samples:
        return f"{name}: {len(keys)} samples, manifest says {samples}"
    return None


def _check(args: tuple) -> str | None:
    return verify_shard(*args)


def verify(out: str | Path, workers: int = 1, decode: bool = True, progress: bool = False) -> tuple[int, list[str]]:
    """Check every shard of the set in `out`; returns (shards checked, problems).

    Args:
        out: the shard folder.
        workers: processes checking shards in parallel.
        decode: fully decode every image.
        progress: show progress over the samples (rich on a terminal, plain lines otherwise).
    """
    out = Path(out)
    manifest = read_manifest(out)
    jobs = [(out / s["name"], s["samples"], s["bytes"], s["sha256"], decode)
            for split in manifest["splits"].values() for s in split["shards"]]
    results: list[str | None] = []
    with ProgressReporter(sum(j[1] for j in jobs), "verify", enabled=progress, every_s=10.0) as bar:
        if workers > 1 and len(jobs) > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                for job, r in zip(jobs, pool.imap(_check, jobs, chunksize=1)):
                    results.append(r)
                    bar.advance(job[1])
        else:
            for job in jobs:
                results.append(_check(job))
                bar.advance(job[1])
    problems = [r for r in results if r is not None]
    listed = {j[0].name for j in jobs}
    problems += [f"{p.name}: not listed in the manifest" for p in sorted(out.glob("*-*.tar")) if p.name not in listed]
    return len(jobs), problems
