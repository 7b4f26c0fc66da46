"""Shared tail of the benchmark scripts: stamp results with date/machine and merge them into JSON."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_results(out: Path, summary: dict[str, Any], threads: int) -> None:
    """Merge `summary` (size -> entry) into `out`, keeping earlier sizes (they are run separately)."""
    stamp = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
             "cpu_count": os.cpu_count(), "threads": threads}
    results = json.loads(out.read_text())["results"] if out.exists() else {}
    results.update({size: {**stamp, **entry} for size, entry in summary.items()})
    out.write_text(json.dumps({"results": results}, indent=2))
    print(f"wrote {out}")
