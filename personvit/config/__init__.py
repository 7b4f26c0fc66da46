"""Typed config schemas and the one merge (defaults <- YAML <- dotted overrides); torch-free.

Public API: `load_config`, `save_config`, `ConfigError` and the schemas of each command
(`PretrainConfig`, `FinetuneConfig`, `EvaluateConfig`) and their shared sections.
"""

from __future__ import annotations

from personvit.lazy_exports import lazy_getattr

# Public name -> the module that owns it, imported on first use (personvit.lazy_exports).
_EXPORTS = {
    "BackboneConfig": "personvit.config.model",
    "CheckpointConfig": "personvit.config.sections",
    "ConfigError": "personvit.config.core",
    "DistConfig": "personvit.config.sections",
    "EvalOptions": "personvit.config.finetune",
    "EvaluateConfig": "personvit.config.finetune",
    "FinetuneConfig": "personvit.config.finetune",
    "HeadConfig": "personvit.config.pretrain",
    "PretrainConfig": "personvit.config.pretrain",
    "PretrainDataConfig": "personvit.config.data",
    "PretrainModelConfig": "personvit.config.pretrain",
    "ReIDDataConfig": "personvit.config.finetune",
    "ReIDModelConfig": "personvit.config.finetune",
    "RunConfig": "personvit.config.sections",
    "config_to_dict": "personvit.config.core",
    "from_dict": "personvit.config.core",
    "load_config": "personvit.config.core",
    "parse_overrides": "personvit.config.core",
    "read_yaml": "personvit.config.core",
    "save_config": "personvit.config.core",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
