"""Trainers and evaluation: `personvit pretrain | finetune | evaluate | export` (each module's `main(argv)`).

Public API: the pieces below, which other packages and tests build on.
"""

from __future__ import annotations

import importlib

# Public name -> the module that owns it. Imported on first use (PEP 562), so importing this
# package stays as light as before (no torch, not even `typing`, unless a name is used).
_EXPORTS = {
    "Checkpointer": "personvit.engine.loop",
    "EvaluationError": "personvit.engine.evaluate",
    "FlatGradReducer": "personvit.engine.grad_sync",
    "PersonViTSSL": "personvit.engine.ssl_meta_arch",
    "Position": "personvit.engine.loop",
    "TrainLoop": "personvit.engine.loop",
    "build_eval_model": "personvit.engine.evaluate",
    "embed_split": "personvit.engine.evaluate",
    "evaluate_model": "personvit.engine.evaluate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
