"""`make_synthetic`: a Market-1501-layout folder of synthetic pedestrians plus `unlabeled/`.

Layout: `bounding_box_train/`, `query/`, `bounding_box_test/` with Market names
(`0002_c1s1_000451_03.jpg`: pid, camera, sequence 1, frame, box), including a few distractors
(pid 0) and junk images (pid -1) in the gallery as in the real set, and `unlabeled/` (JPEGs of
identities disjoint from the labeled ones, seen by their own cameras) for pretraining.
Every image is a pure function of (seed, what it is), so any `workers` gives identical files.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from shard_tools.synth.attributes import sample_camera, sample_identity, sample_scene
from shard_tools.synth.render import render

# numpy seed-sequence keys: (seed, KIND, ...) -> one generator per identity / camera / image
IDENTITY, CAMERA, IMAGE, PLAN, SCENE = 1, 2, 3, 4, 5
UNLABELED_BASE = 1_000_000  # identity numbers of unlabeled people: disjoint from labeled ones
UNLABELED_CAMERA_BASE = 100


@dataclasses.dataclass(frozen=True)
class Job:
    """One image to render: who, which camera, which draw, where it goes."""

    identity: int
    camera: int  # a labeled camera, or the image's own scene number when `own_scene`
    draw: int
    path: str
    own_scene: bool = False  # an unlabeled image with its own scene (`sample_scene`)


def _labeled_jobs(identities: int, cameras: int, seed: int) -> list[Job]:
    """Train ids 1..n/2, test ids after; each seen by 2+ cameras; query = one image in 1-2 cameras."""
    rng = np.random.default_rng([seed, PLAN])
    n_train = identities // 2
    frame = [0] * (cameras + 1)
    jobs: list[Job] = []

    def add(folder: str, pid: int, ident: int, cam: int, draw: int) -> None:
        frame[cam] += 1 + int(rng.integers(0, 40))
        prefix = "-1" if pid == -1 else f"{pid:04d}"
        jobs.append(Job(ident, cam, draw, f"{folder}/{prefix}_c{cam}s1_{frame[cam]:06d}_{draw % 100:02d}.jpg"))

    for ident in range(identities):
        pid = ident + 1
        cams = sorted(rng.choice(np.arange(1, cameras + 1), size=min(cameras, int(rng.integers(2, 5))), replace=False))
        per_cam = [int(rng.integers(2, 5)) for _ in cams]
        draw = 0
        if ident < n_train:
            for cam, k in zip(cams, per_cam):
                for _ in range(k):
                    add("bounding_box_train", pid, ident, int(cam), draw)
                    draw += 1
            continue
        n_query_cams = 1 if len(cams) == 2 else 2
        for c, (cam, k) in enumerate(zip(cams, per_cam)):
            for i in range(k):
                add("query" if (c < n_query_cams and i == 0) else "bounding_box_test", pid, ident, int(cam), draw)
                draw += 1
    # distractors (pid 0: other people, kept in the gallery) and junk (pid -1: dropped by parsers)
    n_test = identities - n_train
    for j in range(max(1, n_test // 5)):
        add("bounding_box_test", 0, UNLABELED_BASE // 2 + j, int(rng.integers(1, cameras + 1)), 0)
    for j in range(max(1, n_test // 20)):
        add("bounding_box_test", -1, UNLABELED_BASE // 2 + n_test + j, int(rng.integers(1, cameras + 1)), 0)
    return jobs


def _unlabeled_jobs(images: int, cameras: int, per_identity: int) -> list[Job]:
    """`images` JPEGs of `images / per_identity` people; each image its own scene (`cameras` = 0), else
    one of `cameras` fixed cameras (the older, scene-dominated data, kept for comparison)."""
    jobs = []
    for i in range(images):
        ident = UNLABELED_BASE + i // per_identity
        path = f"unlabeled/{i:07d}.jpg"
        if cameras:
            cam = UNLABELED_CAMERA_BASE + int(np.random.default_rng([i, ident]).integers(cameras))
            jobs.append(Job(ident, cam, i % per_identity, path))
        else:
            jobs.append(Job(ident, i + 1, i % per_identity, path, own_scene=True))
    return jobs


def write_validation_split(out: Path, identities: int) -> dict[str, int]:
    """`out/val/`: a Market-layout folder that holds out the last `identities` training people.

    Tuning on the test split overfits the benchmark, so recipes are tuned on people of the training
    split: `val/bounding_box_train/` keeps the other training people's images; the held-out people's
    images become `val/query/` (the first image in each of their first one or two cameras, one when
    they were seen by two, as in the test split) and `val/bounding_box_test/`. Files are hard links
    (copies where links fail). Returns the image count per folder.
    """
    from shard_tools.sources import open_source

    # the Market parser's view of the train split (junk and malformed names already dropped)
    train = sorted((r for r in open_source("market1501", out).list().records if r.split == "train"),
                   key=lambda r: r.path)  # pid, camera, frame order
    cams_of: dict[int, list[int]] = {}
    for r in train:
        if r.camid not in cams_of.setdefault(r.pid, []):
            cams_of[r.pid].append(r.camid)
    if not 0 < identities < len(cams_of):
        raise ValueError(f"--val-identities must be in 1..{len(cams_of) - 1} (training people), got {identities}")
    held = set(sorted(cams_of)[-identities:])
    dest = out / "val"
    if dest.exists():
        shutil.rmtree(dest)
    counts = dict.fromkeys(("bounding_box_train", "query", "bounding_box_test"), 0)
    queried: set[tuple[int, int]] = set()
    for r in train:
        folder = "bounding_box_train"
        if r.pid in held:
            query_cams = cams_of[r.pid][: 1 if len(cams_of[r.pid]) == 2 else 2]
            folder = "query" if r.camid in query_cams and (r.pid, r.camid) not in queried else "bounding_box_test"
            queried.add((r.pid, r.camid))
        source, target = out / r.path, dest / folder / Path(r.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        counts[folder] += 1
    return counts


_STATE: dict = {}


def _render_job(job: Job) -> int:
    seed, out = _STATE["seed"], _STATE["out"]
    ident = sample_identity(np.random.default_rng([seed, IDENTITY, job.identity]))
    if job.own_scene:
        cam = sample_scene(np.random.default_rng([seed, SCENE, job.camera]))
    else:
        cam = sample_camera(np.random.default_rng([seed, CAMERA, job.camera]))
    img = render(ident, cam, np.random.default_rng([seed, IMAGE, job.identity, job.camera, job.draw]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=cam.quality)
    (out / job.path).write_bytes(buf.getvalue())
    return len(buf.getvalue())


def _init(seed: int, out: Path) -> None:
    _STATE.update(seed=seed, out=out)


def make_synthetic(out: str | Path, identities: int = 200, cameras: int = 6, unlabeled: int = 3000, seed: int = 0,
                   unlabeled_cameras: int = 0, images_per_unlabeled_id: int = 3, workers: int = 1,
                   val_identities: int = 0, progress: bool = False) -> dict:
    """Render the synthetic dataset into `out`; returns counts per folder (also in `out/synth.json`).

    Args:
        out: the dataset root (created; existing images of the same names are overwritten).
        identities: labeled people, split half train / half test (query + gallery).
        cameras: labeled cameras, 2..9 (Market names carry one digit).
        unlabeled: images in `unlabeled/` (people disjoint from the labeled ones).
        seed: everything is a function of it.
        unlabeled_cameras: 0 = every unlabeled image has its own scene (lighting, framing, background:
            `sample_scene`), as LUPerson's crops from thousands of videos; N = N fixed cameras of
            their own (the older data, on which pretraining learned the scene, not the person).
        images_per_unlabeled_id: images per unlabeled person.
        workers: rendering processes (output does not depend on it).
        val_identities: > 0 also writes `out/val/`, a validation split of that many training people
            (`write_validation_split`).
        progress: print a summary line.
    """
    if not 2 <= cameras <= 9:
        raise ValueError(f"--cameras must be in 2..9 (Market-1501 names hold one digit), got {cameras}")
    if identities < 2 or unlabeled < 0:
        raise ValueError(f"need --identities >= 2 and --unlabeled >= 0, got {identities}, {unlabeled}")
    t0 = time.monotonic()
    out = Path(out)
    jobs = _labeled_jobs(identities, cameras, seed) + _unlabeled_jobs(unlabeled, unlabeled_cameras,
                                                                     images_per_unlabeled_id)
    for folder in ("bounding_box_train", "query", "bounding_box_test", "unlabeled"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    if workers > 1:
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers, initializer=_init, initargs=(seed, out)) as pool:
            sizes = pool.map(_render_job, jobs, chunksize=64)
    else:
        _init(seed, out)
        sizes = [_render_job(j) for j in jobs]
    counts: dict = {}
    for j in jobs:
        folder = j.path.split("/", 1)[0]
        counts[folder] = counts.get(folder, 0) + 1
    summary = {"seed": seed, "identities": identities, "cameras": cameras, "unlabeled": unlabeled,
               "unlabeled_cameras": unlabeled_cameras, "images": counts, "bytes": int(sum(sizes))}
    if val_identities:
        summary["val"] = write_validation_split(out, val_identities)
    (out / "synth.json").write_text(json.dumps(summary, indent=1) + "\n")
    if progress:
        dt = time.monotonic() - t0
        print(f"rendered {len(jobs)} images into {out} in {dt:.1f} s ({len(jobs) / max(dt, 1e-9):.0f} images/s): "
              + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    return summary
