"""`personvit ckpt info PATH` and `personvit ckpt compare A B`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from personvit import cli_args
from personvit.checkpoint import (
    CheckpointManager,
    compare_checkpoints,
    load_checkpoint,
    resolve_checkpoint_path,
)


def _count(obj: Any) -> tuple[int, int, int]:
    """(tensors, elements, bytes) inside a nested structure."""
    if isinstance(obj, torch.Tensor):
        return 1, obj.numel(), obj.numel() * obj.element_size()
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    t = n = b = 0
    for v in items:
        dt, dn, db = _count(v)
        t, n, b = t + dt, n + dn, b + db
    return t, n, b


def _summary(v: Any) -> str:
    if isinstance(v, (int, float, str, bool)) or v is None:
        return repr(v)
    t, n, b = _count(v)
    kind = type(v).__name__
    return f"{kind}: {t} tensors, {n:,} values, {b / 2**20:.2f} MiB" if t else f"{kind} ({len(v)} items)"


def _resolve_with_fallback(path: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """(file, payload, why newer ones were skipped): a folder means what a resume would load."""
    if path.is_file():
        return path, load_checkpoint(path), []
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found, payload, skipped = CheckpointManager(folder, is_main=False).newest_loadable()
    if found is not None:
        return found, payload, skipped
    p = resolve_checkpoint_path(path)  # raises the usual "no complete checkpoint" error
    return p, load_checkpoint(p), skipped


def info(path: str) -> int:
    from rich.console import Console
    from rich.table import Table

    p, payload, skipped = _resolve_with_fallback(Path(path))
    console = Console()
    for reason in skipped:
        console.print(f"[yellow]warning:[/yellow] skipping unusable checkpoint {reason}; a resume uses {p}")
    console.print(f"[bold]{p}[/bold]  ({p.stat().st_size / 2**20:.2f} MiB)")
    console.print(f"step {payload['step']}  epoch {payload['epoch']}  end_of_epoch {payload.get('end_of_epoch')}")
    table = Table("entry", "content")
    for k, v in payload["state"].items():
        table.add_row(str(k), _summary(v))
    console.print(table)
    return 0


def main(argv: list[str]) -> int:
    args = cli_args.ckpt().parse_args(argv)
    if args.action == "info":
        return info(args.path)
    diff = compare_checkpoints(args.a, args.b)
    if diff is None:
        print(f"identical: {resolve_checkpoint_path(args.a)} == {resolve_checkpoint_path(args.b)}")
        return 0
    print(f"different: {diff}")
    return 1
