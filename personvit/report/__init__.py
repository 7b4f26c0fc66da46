"""`personvit report RUN_DIR|SWEEP_DIR`: PNG curves and a markdown summary of a run or a sweep (torch-free)."""

from __future__ import annotations

from personvit.lazy_exports import lazy_getattr

# Public name -> the module that owns it, imported on first use (personvit.lazy_exports).
_EXPORTS = {
    "METRICS": "personvit.report.sweep_table",
    "PLAN_NAME": "personvit.report.sweep_table",
    "markdown_table": "personvit.report.sweep_table",
    "read_sweep": "personvit.report.sweep_table",
    "report": "personvit.report.cli",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
