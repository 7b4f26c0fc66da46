"""Pack raw person-image datasets into verified webdataset tar shards (see DESIGN.md, issue 3).

Public entry points: `shard_tools.pack.pack`, `shard_tools.verify.verify`,
`shard_tools.synth.make_synthetic`, and the `shard-tools` console script (`shard_tools.cli:main`).
Names below: what other packages import (the `pack` / `verify` functions live in their same-named
modules, which this package cannot shadow).
"""

from __future__ import annotations

from personvit.lazy_exports import lazy_getattr

__version__ = "0.1.0"

# Public name -> the module that owns it, imported on first use (personvit.lazy_exports).
_EXPORTS = {
    "SourceError": "shard_tools.sources.base",
    "open_source": "shard_tools.sources",
    "read_manifest": "shard_tools.manifest",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
