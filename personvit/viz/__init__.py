"""Visual analysis (`personvit visualize`): attention maps, patch clusters, correspondences, ranked lists.

Public API: `main(argv)` (the subcommand) and the drawing helpers the figures share.
"""

from __future__ import annotations

import importlib

# Public name -> the module that owns it. Imported on first use (PEP 562), so importing this
# package stays as light as before (no torch, not even `typing`, unless a name is used).
_EXPORTS = {
    "BG": "personvit.viz.draw",
    "PALETTE": "personvit.viz.draw",
    "font": "personvit.viz.draw",
    "legend": "personvit.viz.draw",
    "main": "personvit.viz.cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
