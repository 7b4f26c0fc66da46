"""Visual analysis (`personvit visualize`): attention maps, patch clusters, correspondences, ranked lists.

Public API: `main(argv)` (the subcommand) and the drawing helpers the figures share.
"""

from __future__ import annotations

from personvit.lazy_exports import lazy_getattr

# Public name -> the module that owns it, imported on first use (personvit.lazy_exports).
_EXPORTS = {
    "BG": "personvit.viz.draw",
    "PALETTE": "personvit.viz.draw",
    "font": "personvit.viz.draw",
    "legend": "personvit.viz.draw",
    "main": "personvit.viz.cli",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
