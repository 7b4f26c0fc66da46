"""`info`: a table of a shard set (splits, shards, samples, ids, cameras, bytes)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from shard_tools.manifest import read_manifest


def human_bytes(n: int) -> str:
    """`12.3 MB`-style size (powers of 1000, as `ls -h --si`)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def info_table(manifest: dict) -> Table:
    """The rich table of a manifest: one row per split plus a total."""
    t = Table(title=f"{manifest['source']} shards ({manifest['tool']})")
    for col in ("split", "shards", "samples", "ids", "cameras", "bytes", "x JPEG bytes"):
        t.add_column(col, justify="left" if col == "split" else "right")
    for split, s in manifest["splits"].items():
        ratio = s["bytes"] / s["jpeg_bytes"] if s["jpeg_bytes"] else float("nan")
        t.add_row(split, str(s["num_shards"]), f"{s['samples']:,}", str(s["num_ids"]), str(s["num_cams"]),
                  human_bytes(s["bytes"]), f"{ratio:.2f}")
    reasons: dict[str, int] = {}
    for skip in manifest["skipped"]:
        kind = skip["reason"].split(" (")[0]  # "corrupt JPEG (OSError: ...)" -> "corrupt JPEG"
        reasons[kind] = reasons.get(kind, 0) + 1
    t.caption = (f"skipped {manifest['num_skipped']} bad input(s)"
                 + (" (" + ", ".join(f"{n} {k}" for k, n in sorted(reasons.items())) + ")" if reasons else "")
                 + "".join(f"; dropped {n} {why}" for why, n in manifest["dropped"].items()))
    return t


def print_info(out: str | Path, console: Console | None = None) -> dict:
    """Print the table of the shard set in `out`; returns its manifest."""
    manifest = read_manifest(out)
    (console or Console()).print(info_table(manifest))
    return manifest
