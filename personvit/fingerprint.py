"""The resume contract's core: which resolved-config keys change the computation, and what changed.

A run folder records the fingerprint of its start: every leaf of the resolved config as a dotted key
(`optim.base_lr`), plus pseudo-keys for what the config does not hold but the computation depends on
(`world_size`, `data.manifest_sha256`). A rerun compares its fingerprint with the recorded one; keys
that differ are refused unless allowed by default (cadence, retention, logging, loader workers: they
cannot change a trained weight) or named with `--allow-change`. Pure functions, no I/O.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALLOWED_BY_DEFAULT",
    "Change",
    "diff",
    "flatten",
    "format_change",
    "is_allowed",
    "manifest_digest",
    "parse_allow_change",
    "refused_changes",
]

# Keys a rerun may change without asking. Each either cannot reach the weights (logging, cadence,
# retention, timeouts, where the run folder or the shards live) or is a length the user extends on
# purpose (`train.epochs`: note that the cosine schedules are laid out over it, so a longer run is
# not the same as one planned that long from the start). Loader workers / prefetch / pinning are here
# because the batch stream is identical for any value (the loader's contract). `data.shards` is a
# path: the shard set's content is pinned by `data.manifest_sha256`, so moving the folder is fine.
# `data.log_sample_keys` only writes what was read. `monitor.*` (the kNN retrieval monitor) runs under a forked RNG and restores every module's mode:
# a run with it on ends bitwise equal to one with it off (tests/personvit/engine/test_knn_monitor.py).
# A trailing `.` matches a whole section.
ALLOWED_BY_DEFAULT: tuple[str, ...] = (
    "train.epochs",
    "run.dir",
    "run.log_every_steps",
    "run.progress_every_s",
    "run.tensorboard",
    "checkpoint.",
    "dist.",
    "data.shards",
    "data.num_workers",
    "data.prefetch_factor",
    "data.pin_memory",
    "data.log_sample_keys",
    "eval.",
    "monitor.",
)

ABSENT = "<unset>"


@dataclass(frozen=True)
class Change:
    """One key whose value differs between the recorded and the new fingerprint."""

    key: str
    old: Any
    new: Any


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaves of a nested mapping: `{"optim": {"lr": 1}}` -> `{"optim.lr": 1}`.

    Args:
        tree: the resolved config as plain data (`config_to_dict`).
        prefix: dotted path of `tree` itself.
    Lists and tuples are leaves (compared whole), so `[64, 32]` and `(64, 32)` are equal.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def manifest_digest(manifest_bytes: bytes) -> str:
    """sha256 of a shard set's `manifest.json` bytes (it lists every shard's own sha256)."""
    return hashlib.sha256(manifest_bytes).hexdigest()


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Keys whose values differ between two flat fingerprints, sorted; a missing key reads `<unset>`."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, ABSENT), new.get(key, ABSENT)
        if _canonical(a) != _canonical(b):
            changes.append(Change(key, a, b))
    return changes


def _canonical(value: Any) -> str:
    # 1 == 1.0 as a config value (the loader coerces ints where floats are due), tuples == lists.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    return json.dumps(value, sort_keys=True, default=str)


def is_allowed(key: str, patterns: Iterable[str]) -> bool:
    """Whether `key` matches one of `patterns` (an exact key, or a section ending in `.`)."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def parse_allow_change(values: Sequence[str] | str | None, known: Iterable[str]) -> tuple[str, ...]:
    """Patterns from `--allow-change` values (comma-separated; a section `optim` or `optim.*` means all of it).

    Args:
        values: the option's value(s), e.g. `"run.seed,optim.base_lr"`.
        known: every key of the fingerprint, to reject a typo instead of silently allowing nothing.
    Raises:
        ValueError: a pattern that matches no key (with the closest one).
    """
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    known = sorted(known)
    sections = sorted({k.rsplit(".", 1)[0] + "." for k in known if "." in k})
    patterns: list[str] = []
    for raw in ",".join(items).split(","):
        item = raw.strip()
        if not item:
            continue
        pattern = item[:-1] if item.endswith(".*") else item
        if pattern not in known:
            pattern = pattern.rstrip(".") + "."
            if not any(k.startswith(pattern) for k in known):
                close = difflib.get_close_matches(item, known + sections, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0].rstrip('.')}'?)" if close else ""
                raise ValueError(f"--allow-change: '{item}' is not a config key{hint}")
        patterns.append(pattern)
    return tuple(patterns)


def refused_changes(changes: Sequence[Change], allowed: Iterable[str]) -> list[Change]:
    """The changes neither allowed by default nor by `allowed` (patterns as `is_allowed` takes)."""
    patterns = (*ALLOWED_BY_DEFAULT, *allowed)
    return [c for c in changes if not is_allowed(c.key, patterns)]


def format_change(change: Change) -> str:
    """`run.seed: 0 -> 5`."""
    return f"{change.key}: {_show(change.old)} -> {_show(change.new)}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value if value == ABSENT or (value and " " not in value) else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, bool) or value is None else repr(value)
