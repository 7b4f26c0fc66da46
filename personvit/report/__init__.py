"""`personvit report RUN_DIR|SWEEP_DIR`: PNG curves and a markdown summary of a run or a sweep (torch-free)."""

from __future__ import annotations

import importlib

# Public name -> the module that owns it. Imported on first use (PEP 562), so importing this
# package stays as light as before (no torch, not even `typing`, unless a name is used).
_EXPORTS = {
    "METRICS": "personvit.report.sweep_table",
    "PLAN_NAME": "personvit.report.sweep_table",
    "markdown_table": "personvit.report.sweep_table",
    "read_sweep": "personvit.report.sweep_table",
    "report": "personvit.report.cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
