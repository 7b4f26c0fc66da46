"""`pack`: a dataset source -> `{split}-NNNNNN.tar` shards + `manifest.json`, parallel and resumable."""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing as mp
import signal
import sys
import time
from pathlib import Path

from personvit.data.format import IMAGE_EXT, META_EXT, sample_json
from personvit.runlog import ProgressReporter, get_logger
from shard_tools.imagecheck import jpeg_problem
from shard_tools.manifest import (
    MANIFEST,
    atomic_write_json,
    journal_path,
    load_journal,
    merge,
    write_plan_info,
)
from shard_tools.outdir import claim_out_folder
from shard_tools.plan import PackOptions, Plan, ShardPlan, array_slice, make_plan, shard_advice
from shard_tools.sources import Source, SourceError, open_source
from shard_tools.writer import ShardWriter, remove_stale_temps

log = get_logger("shard_tools.pack")
MAX_SKIPS_LOGGED = 20


class PackInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a pack; finished shards are kept and a rerun resumes."""


def write_shard(source: Source, shard: ShardPlan, out: Path, decode_check: bool, fingerprint: str) -> dict:
    """Read, check and write one shard, then journal it; returns the journal entry.

    Args:
        source: where the bytes come from.
        shard: the planned slots.
        out: the shard folder.
        decode_check: entropy-decode every JPEG (see `jpeg_problem`).
        fingerprint: the plan's, stored in the journal entry.
    """
    final = out / shard.name
    remove_stale_temps(final)
    skipped, pids, cams, jpeg_bytes = [], set(), set(), 0
    with ShardWriter(final) as w:
        for key, rec in shard.slots():
            try:
                data = source.read(rec.path)
            except OSError as e:  # unreadable, vanished, a dangling link, a directory named x.jpg...
                skipped.append({"split": rec.split, "path": rec.path, "reason": f"unreadable ({type(e).__name__})"})
                continue
            problem = jpeg_problem(data, decode=decode_check)
            if problem is not None:
                skipped.append({"split": rec.split, "path": rec.path, "reason": problem})
                continue
            w.add(key, {IMAGE_EXT: data, META_EXT: sample_json(source.name, rec.pid, rec.camid, rec.path)})
            pids.add(rec.pid)
            cams.add(rec.camid)
            jpeg_bytes += len(data)
        samples = w.samples
        nbytes, sha = w.commit()
    entry = {"name": shard.name, "split": shard.split, "samples": samples, "bytes": nbytes, "sha256": sha,
             "jpeg_bytes": jpeg_bytes, "planned": len(shard), "pids": sorted(pids), "cams": sorted(cams),
             "skipped": skipped, "fingerprint": fingerprint}
    atomic_write_json(journal_path(out, shard.name), entry)
    return entry


# Worker state, set once per process by the pool initializer (the source is pickled once, not per shard).
_WORKER: dict = {}


def _init_worker(source: Source, out: Path, decode_check: bool, fingerprint: str) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it (and terminates the pool),
    # so workers print no KeyboardInterrupt tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER.update(source=source, out=out, decode_check=decode_check, fingerprint=fingerprint)


def _write_in_worker(shard: ShardPlan) -> dict:
    w = _WORKER
    return write_shard(w["source"], shard, w["out"], w["decode_check"], w["fingerprint"])


def pack(source: str, src: str | Path, out: str | Path, *, maxcount: int = 10000, workers: int = 1,
         fraction: float = 1.0, cfs_list: str | None = None, seed: int = 0, array_index: int = 0,
         array_count: int = 1, shuffle_train: bool = True, decode_check: bool = False,
         overwrite: bool = False, progress: bool = True) -> dict | None:
    """Pack `source` at `src` into shards in `out`; resumes whatever an earlier run left.

    Args:
        source: `luperson`, `market1501`, `dukemtmc`, `occluded-duke` or `msmt17`.
        src: the dataset folder.
        out: the shard folder (created).
        maxcount: samples per shard.
        workers: processes writing shards (output bytes do not depend on it).
        fraction, cfs_list, seed, shuffle_train, decode_check: see `PackOptions`.
        array_index, array_count: write only this task's contiguous range of shards.
        overwrite: replace a shard set that another pack left in `out` (see `claim_out_folder`).
        progress: show progress and the final summary.

    Returns:
        The manifest when the whole set is finished (it is written to `out/manifest.json`), else None
        (other array tasks still have shards to write).

    Raises:
        SourceError: bad input, a foreign output folder, a set of 0 samples, or a failed write (ENOSPC,
            EIO, ...: one line naming the file; finished shards are kept, temporaries removed).
        PackInterrupted: on Ctrl-C, after the same clean-up.
    """
    t0 = time.monotonic()
    opts = PackOptions(maxcount=maxcount, fraction=fraction, cfs_list=cfs_list, seed=seed,
                       shuffle_train=shuffle_train, decode_check=decode_check)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if overwrite and array_count > 1:
        raise SourceError("--overwrite cannot be used by array tasks (each would delete the others' shards); "
                          "empty the output folder first")
    src_obj = open_source(source, src)
    plan = make_plan(src_obj.list(), opts, source)
    out = Path(out)
    claim_out_folder(out, plan.fingerprint, [s.name for s in plan.shards], overwrite)
    mine = [plan.shards[i] for i in array_slice(len(plan.shards), array_index, array_count)]
    todo: list[ShardPlan] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_plan_info(out, {
            "fingerprint": plan.fingerprint, "source": source, "source_root": str(Path(src_obj.root).resolve()),
            "options": dataclasses.asdict(opts),
            "shards": {split: [s.name for s in shards] for split, shards in plan.splits().items()},
            "skipped": [s.to_dict() for s in plan.skipped], "dropped": plan.dropped,
        })
        todo = [s for s in mine if load_journal(out, s.name, plan.fingerprint) is None]
        _write_shards(plan, mine, todo, src_obj, out, opts, workers, progress, t0, f"pack {source}")
        if any(load_journal(out, s.name, plan.fingerprint) is None for s in plan.shards):
            if progress:
                print(f"array task {array_index}/{array_count} done; run `shard-tools merge {out}` once all "
                      "tasks finish", flush=True)
            return None
        manifest = merge(out)
    except OSError as e:
        kept = _clean_up(out, todo, mine, plan.fingerprint)
        raise SourceError(f"cannot write {e.filename or out}: {e.strerror or e}; {kept} of {len(mine)} shard(s) "
                          "finished and kept, temporary files removed: free space (or fix the device) and "
                          "rerun the same command to resume") from None
    except KeyboardInterrupt:
        kept = _clean_up(out, todo, mine, plan.fingerprint)
        raise PackInterrupted(f"{kept} of {len(mine)} shard(s) finished and kept in {out}; "
                              "rerun the same command to resume") from None
    _report_merged(out, manifest, progress)
    return manifest


def _clean_up(out: Path, todo: list[ShardPlan], mine: list[ShardPlan], fingerprint: str) -> int:
    """After a failed or interrupted pack: remove this task's temporaries; how many of its shards are kept."""
    _remove_temps(out, todo)
    return sum(load_journal(out, s.name, fingerprint) is not None for s in mine)


def _report_merged(out: Path, manifest: dict, progress: bool) -> None:
    """Print the merged set's summary; a set of 0 samples is an error naming the first skip's reason."""
    if progress:
        print(f"wrote {out / MANIFEST}: " + ", ".join(f"{k} {v['samples']} samples / {v['num_shards']} shards"
                                                      for k, v in manifest["splits"].items()), flush=True)
    if not sum(v["samples"] for v in manifest["splits"].values()):
        first = next(iter(manifest["skipped"]), None)
        why = f" (first: {first['path']}: {first['reason']})" if first else ""
        raise SourceError(f"packed 0 samples into {out}: all {manifest['num_skipped']} listed image(s) were "
                          f"skipped{why}; every one is listed with its reason in {out / MANIFEST}")


def _write_shards(plan: Plan, mine: list[ShardPlan], todo: list[ShardPlan], src_obj: Source, out: Path,
                  opts: PackOptions, workers: int, progress: bool, t0: float, label: str) -> None:
    """Write the `todo` shards of this task's `mine`, with progress, skip logging and a summary line."""
    total = sum(len(s) for s in mine)
    done_before = total - sum(len(s) for s in todo)
    if progress:
        for split, shards in plan.splits().items():
            print(shard_advice(sum(len(s) for s in shards), opts.maxcount, split), flush=True)
        if done_before:
            print(f"resuming: {len(mine) - len(todo)} of {len(mine)} shard(s) already finished", flush=True)
    packed = skipped = 0
    t1 = time.monotonic()
    with ProgressReporter(total, label, enabled=progress, every_s=10.0, initial=done_before) as bar:
        for entry in _run(todo, src_obj, out, opts.decode_check, plan.fingerprint, workers):
            packed += entry["samples"]
            for s in entry["skipped"]:
                if skipped < MAX_SKIPS_LOGGED:
                    log.warning("skipped %s: %s", s["path"], s["reason"])
                skipped += 1
            bar.advance(entry["planned"], skipped=skipped)
    dt = time.monotonic() - t1
    if skipped > MAX_SKIPS_LOGGED:
        log.warning("skipped %d images in all; every one is listed with its reason in %s", skipped, MANIFEST)
    if progress:
        print(f"packed {packed} images into {len(todo)} shard(s) in {dt:.1f} s: {packed / max(dt, 1e-9):.0f} images/s "
              f"({workers} worker(s)); skipped {skipped}; total {time.monotonic() - t0:.1f} s", flush=True)


def _remove_temps(out: Path, todo: list[ShardPlan]) -> None:
    """Delete the temporaries of this task's unfinished shards and of their journals (their writers are
    gone: stopped or failed; a worker terminated on Ctrl-C may have been between the shard's rename and
    the journal's)."""
    for shard in todo:
        remove_stale_temps(out / shard.name)
        remove_stale_temps(journal_path(out, shard.name))


def _run(todo: list[ShardPlan], source: Source, out: Path, decode_check: bool, fingerprint: str, workers: int):
    """Yield journal entries as shards finish: in this process, or over a pool of `workers`."""
    if workers == 1 or len(todo) <= 1:
        for shard in todo:
            yield write_shard(source, shard, out, decode_check, fingerprint)
        return
    # fork: workers inherit the imported modules (no re-import cost); spawn where fork is unavailable.
    # gc.freeze: a forked worker's garbage collector would otherwise touch every inherited object
    # and so copy the parent's pages (copy-on-write) into each worker. The listing is numpy columns
    # (no per-image objects) and each task pickles only its shard's rows (ShardPlan.__reduce__).
    gc.freeze()
    try:
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(source, out, decode_check, fingerprint)) as pool:
            yield from pool.imap_unordered(_write_in_worker, todo, chunksize=1)
    finally:
        gc.unfreeze()
