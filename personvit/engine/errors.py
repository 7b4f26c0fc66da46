"""Errors the trainers raise for the command line to report in one line (no traceback)."""

from __future__ import annotations

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stops before the update, so the last checkpoint stays good."""
