"""Atomic checkpoints with commit markers, keep-latest-k and keep-forever retention.

Layout of a checkpoint folder (usually `<run dir>/checkpoints/`)::

    ckpt-000001200.pt        payload (torch.save of a plain dict: tensors, scalars, lists, dicts)
    ckpt-000001200.commit    commit marker (JSON: file, bytes, step, epoch, keep, time)
    latest                   name of the newest committed checkpoint

A checkpoint counts only once its marker exists. Both files are written to a temporary name,
fsynced and renamed, and the folder is fsynced, so a job SIGKILLed at any instant leaves either the
previous state or the new one, never a half-written file under a final name. `latest` moves only
after the marker. Loading uses `torch.load(weights_only=True)`: a checkpoint can hold tensors and
plain containers, never arbitrary pickles, so opening a file from someone else's run executes no code.
Wall-clock times live in the marker, not the payload, so two runs that did the same work produce
bitwise-equal payloads (what `personvit ckpt compare` checks).
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from personvit.atomic_write import atomic_write
from personvit.config.sections import CheckpointConfig
from personvit.runlog import get_logger

FORMAT = "personvit-checkpoint"
VERSION = 1
_NAME_RE = re.compile(r"^ckpt-(\d{9})\.pt$")

log = get_logger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and why."""


def _ckpt_name(step: int) -> str:
    return f"ckpt-{step:09d}.pt"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint file safely.

    Args:
        path: a `ckpt-*.pt` file.
    Returns:
        The payload: `{"format", "version", "step", "epoch", "state"}`.
    Raises:
        CheckpointError: missing, truncated, not loadable with weights_only, or not ours.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a personvit checkpoint (no '{FORMAT}' format tag)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} unsupported (expected {VERSION})")
    return payload


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file from a file, a checkpoint folder, or a run folder (its latest checkpoint).

    A newer file that is not usable (truncated, changed after its commit, or without its commit
    marker) is skipped with a warning naming it, as a resume does: `model.init=<run>` must not quietly start from older
    weights than the folder seems to hold.
    """
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        if folder.is_dir() and (any(folder.glob("ckpt-*.commit")) or (folder / "latest").exists()):
            manager = CheckpointManager(folder, is_main=False)
            found = manager.latest()
            if found is not None:
                for reason in manager.unusable_newer(found):
                    log.warning("skipping unusable checkpoint %s; using %s", reason, found)
                return found
    raise CheckpointError(f"no complete checkpoint at {path}")


class CheckpointManager:
    """Owns one checkpoint folder: atomic saves, retention, and loading with fallback.

    Args:
        root: the checkpoint folder (created on first save).
        keep_last: recent complete checkpoints to keep (>= 2: the newest may be mid-write).
        keep_every_epochs: keep forever the checkpoint saved at the end of every N-th epoch (0 = off).
        is_main: only the main rank writes; others may still read.
    Raises:
        ValueError: a retention value `CheckpointConfig` refuses (its `__post_init__` owns the rules).
    """

    def __init__(self, root: str | Path, keep_last: int = 2, keep_every_epochs: int = 0, is_main: bool = True):
        CheckpointConfig(keep_last=keep_last, keep_every_epochs=keep_every_epochs)  # the one validation
        self.root = Path(root)
        self.keep_last = keep_last
        self.keep_every_epochs = keep_every_epochs
        self.is_main = is_main
        if is_main and self.root.is_dir():
            for stale in self.root.glob(".*.tmp*"):  # leftovers of a write killed mid-way
                stale.unlink(missing_ok=True)

    @classmethod
    def from_config(
        cls, cfg: CheckpointConfig, run_dir: str | Path, is_main: bool = True
    ) -> CheckpointManager:
        """The manager of a run's `checkpoints/` folder with the retention of its `checkpoint` section.

        Args:
            cfg: the run's `checkpoint` section (validated when it was built).
            run_dir: the run folder; checkpoints live in `<run_dir>/checkpoints`.
            is_main: only the main rank writes.
        """
        return cls(Path(run_dir) / "checkpoints", cfg.keep_last, cfg.keep_every_epochs, is_main=is_main)

    # ----------------------------------------------------------------- listing
    def _marker(self, ckpt: Path) -> Path:
        return ckpt.with_suffix(".commit")

    def _read_marker(self, ckpt: Path) -> dict[str, Any] | None:
        try:
            marker = json.loads(self._marker(ckpt).read_text())
        except (OSError, ValueError):
            return None
        try:
            if ckpt.stat().st_size != marker.get("bytes"):
                return None
        except OSError:
            return None
        return marker

    def committed(self) -> list[Path]:
        """Complete checkpoints (marker present, size matching), oldest first."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if _NAME_RE.match(p.name) and self._read_marker(p) is not None:
                out.append(p)
        return sorted(out)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, per `latest` when valid, else by scanning markers."""
        pointer = self.root / "latest"
        if pointer.is_file():
            cand = self.root / pointer.read_text().strip()
            if _NAME_RE.match(cand.name) and self._read_marker(cand) is not None:
                return cand
        committed = self.committed()
        return committed[-1] if committed else None

    def candidates(self) -> Iterator[Path]:
        """Checkpoints to try, best first: `latest`, then every committed one, newest first."""
        first = self.latest()
        seen = set()
        if first is not None:
            seen.add(first)
            yield first
        for p in reversed(self.committed()):
            if p not in seen:
                yield p

    # ----------------------------------------------------------------- save
    def save(self, state: dict[str, Any], step: int, epoch: int, end_of_epoch: bool = False) -> Path | None:
        """Write a checkpoint atomically and apply retention. No-op (returns None) off the main rank.

        Args:
            state: plain dict of tensors / scalars / str / None / lists / tuples / dicts.
            step: optimiser steps done; names the file.
            epoch: epochs completed when `end_of_epoch`, else the epoch in progress.
            end_of_epoch: saved at an epoch boundary (eligible for keep-forever, every
                `keep_every_epochs` epochs).
        """
        if not self.is_main:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        keep_forever = bool(end_of_epoch and self.keep_every_epochs and epoch > 0
                            and epoch % self.keep_every_epochs == 0)
        payload = {"format": FORMAT, "version": VERSION, "step": int(step), "epoch": int(epoch),
                   "end_of_epoch": bool(end_of_epoch), "state": state}
        path = self.root / _ckpt_name(step)
        # A re-save of the same step (e.g. preemption right after a periodic save): drop the marker
        # first so a crash in between cannot pair the old marker with a new, different file.
        self._marker(path).unlink(missing_ok=True)
        size = atomic_write(path, lambda f: torch.save(payload, f))
        marker = {"file": path.name, "bytes": size, "step": int(step), "epoch": int(epoch),
                  "end_of_epoch": bool(end_of_epoch), "keep": bool(keep_forever), "time": time.time()}
        try:
            atomic_write(self._marker(path), lambda f: f.write(json.dumps(marker).encode()))
        except BaseException:
            path.unlink(missing_ok=True)  # a payload without its marker would only be an orphan
            raise
        atomic_write(self.root / "latest", lambda f: f.write(path.name.encode()))
        self._prune()
        return path

    def _prune(self) -> None:
        committed = self.committed()
        recent = set(committed[-self.keep_last:])
        for p in committed:
            if p in recent:
                continue
            marker = self._read_marker(p) or {}
            if marker.get("keep"):
                continue
            self._marker(p).unlink(missing_ok=True)  # uncommit first, then delete
            p.unlink(missing_ok=True)
        # Orphans: payloads whose marker never got written (killed between the two renames).
        for p in self.root.glob("ckpt-*.pt"):
            if not self._marker(p).exists() and p not in recent:
                p.unlink(missing_ok=True)

    # ----------------------------------------------------------------- load
    def unusable_newer(self, than: Path | None) -> list[str]:
        """Why each checkpoint newer than `than` (None: any) cannot be used, newest first.

        A kill between writing a payload and its marker leaves a payload without marker; a full
        disk or a copy cut short leaves a payload shorter than its marker says.
        """
        if not self.root.is_dir():
            return []
        floor = int(than.name[5:14]) if than is not None else -1
        steps = sorted({int(p.name[5:14]) for p in self.root.glob("ckpt-*.*")
                        if p.suffix in (".pt", ".commit") and p.name[5:14].isdigit()}, reverse=True)
        out = []
        for step in steps:
            if step <= floor:
                break
            ckpt = self.root / _ckpt_name(step)
            reason = self._why_unusable(ckpt)
            if reason:
                out.append(f"{ckpt}: {reason}")
        return out

    def _why_unusable(self, ckpt: Path) -> str | None:
        marker_path = self._marker(ckpt)
        if not marker_path.exists():
            return "no commit marker (its write was interrupted)" if ckpt.exists() else None
        try:
            marker = json.loads(marker_path.read_text())
        except (OSError, ValueError):
            return f"unreadable commit marker {marker_path.name}"
        if not ckpt.exists():
            return "payload missing (only its commit marker exists)"
        size, expected = ckpt.stat().st_size, marker.get("bytes")
        if size == expected:
            return None
        if isinstance(expected, int) and size > expected:
            return f"changed after its commit: {size} bytes, its marker says {expected}"
        return f"truncated: {size} of {expected} bytes"

    def newest_loadable(self) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
        """(path, payload, why each newer file was unusable) of the checkpoint a resume would load.

        Path and payload are None when no checkpoint loads; the reasons name every truncated,
        uncommitted or unloadable file newer than the one returned (all of them when none loads).
        """
        skipped: list[str] = []
        for path in self.candidates():
            try:
                payload = load_checkpoint(path)
            except CheckpointError as e:
                skipped.append(str(e))
                continue
            return path, payload, [*self.unusable_newer(path), *skipped]
        return None, None, [*self.unusable_newer(None), *skipped]

    def load_latest(self) -> dict[str, Any] | None:
        """The newest loadable checkpoint's state plus `step` / `epoch`; None when there is none.

        A truncated, uncommitted or unloadable newest file is reported (a warning naming it and
        why) and skipped: the previous complete checkpoint is used, so one bad write never costs
        the whole run.
        """
        path, payload, skipped = self.newest_loadable()
        then = f"resuming from {path}" if path is not None else "no usable checkpoint left, starting afresh"
        for reason in skipped:
            log.warning("skipping unusable checkpoint %s; %s", reason, then)
        if payload is None:
            return None
        out = dict(payload["state"])
        out["step"], out["epoch"] = payload["step"], payload["epoch"]
        out["_path"] = str(path)
        return out

    def latest_finite(self) -> Path | None:
        """The newest loadable checkpoint whose every floating-point tensor is finite (None if none).

        What a run that hit a NaN should restart from: the newest one may already hold the
        non-finite weights of the update that caused it.
        """
        for path in self.candidates():
            try:
                payload = load_checkpoint(path)
            except CheckpointError:
                continue
            if _all_finite(payload["state"]):
                return path
        return None


def _all_finite(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    return True


# --------------------------------------------------------------------------- comparison

def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _first_difference(a: Any, b: Any, where: str) -> str | None:
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return f"{where}: type {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype:
            return f"{where}: dtype {a.dtype} != {b.dtype}"
        if a.shape != b.shape:
            return f"{where}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        ab = a.detach().contiguous().reshape(-1).view(torch.uint8) if a.numel() else a
        bb = b.detach().contiguous().reshape(-1).view(torch.uint8) if b.numel() else b
        if not torch.equal(ab, bb):
            flat_a, flat_b = a.reshape(-1), b.reshape(-1)
            neq = (flat_a != flat_b) | (torch.isnan(flat_a) != torch.isnan(flat_b)) if a.is_floating_point() else flat_a != flat_b
            idx = int(neq.nonzero()[0]) if neq.any() else 0
            return f"{where}: tensors differ at flat index {idx}: {flat_a[idx].item()!r} != {flat_b[idx].item()!r}"
        return None
    if isinstance(a, dict):
        ka, kb = list(a.keys()), list(b.keys())
        if set(ka) != set(kb):
            only_a = sorted(map(str, set(ka) - set(kb)))
            only_b = sorted(map(str, set(kb) - set(ka)))
            return f"{where}: keys differ (only in A: {only_a[:5]}, only in B: {only_b[:5]})"
        for k in ka:
            diff = _first_difference(a[k], b[k], f"{where}.{k}" if where else str(k))
            if diff:
                return diff
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = _first_difference(x, y, f"{where}[{i}]")
            if diff:
                return diff
        return None
    if isinstance(a, float) or isinstance(b, float):
        if _float_bits(float(a)) != _float_bits(float(b)) and not (math.isnan(a) and math.isnan(b)):
            return f"{where}: {a!r} != {b!r}"
        return None
    if a != b:
        return f"{where}: {a!r} != {b!r}"
    return None


def compare_checkpoints(a: str | Path, b: str | Path) -> str | None:
    """First difference between two checkpoints (files, checkpoint folders or run folders), or None.

    Every tensor is compared bit for bit (so -0.0 vs 0.0 and one-ulp changes count), every counter
    exactly.
    """
    pa, pb = resolve_checkpoint_path(a), resolve_checkpoint_path(b)
    return _first_difference(load_checkpoint(pa), load_checkpoint(pb), "")
