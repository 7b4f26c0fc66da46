"""Pack raw person-image datasets into verified webdataset tar shards (see DESIGN.md, issue 3).

Public entry points: `shard_tools.pack.pack`, `shard_tools.verify.verify`,
`shard_tools.synth.make_synthetic`, and the `shard-tools` console script (`shard_tools.cli:main`).
Names below: what other packages import (the `pack` / `verify` functions live in their same-named
modules, which this package cannot shadow).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that owns it. Imported on first use (PEP 562), so importing this
# package stays as light as before (no torch, not even `typing`, unless a name is used).
_EXPORTS = {
    "SourceError": "shard_tools.sources.base",
    "open_source": "shard_tools.sources",
    "read_manifest": "shard_tools.manifest",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
