"""Trainers and evaluation: `personvit pretrain | finetune | evaluate | export` (each module's `main(argv)`).

Public API: the pieces below, which other packages and tests build on.
"""

from __future__ import annotations

from personvit.lazy_exports import lazy_getattr

# Public name -> the module that owns it, imported on first use (personvit.lazy_exports).
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

__getattr__ = lazy_getattr(__name__, _EXPORTS)
