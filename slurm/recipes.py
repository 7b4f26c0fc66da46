"""Recipes as a job will see them: override splitting and schema validation on the login node.

Every submitter (`submit`, `sweep`, `pack`) needs these two steps, so they live here rather than in
one submitter that the others would import: `slurm/submit.py` dispatches to `sweep` and `pack`,
and those importing `submit` back made an import circle.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from personvit.config.core import (
    ConfigError,
    config_to_dict,
    deep_merge,
    load_config,
    parse_overrides,
    read_yaml,
)

SCHEMAS = {
    "pretrain": "personvit.config.pretrain:PretrainConfig",
    "finetune": "personvit.config.finetune:FinetuneConfig",
}


def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(`cluster.` overrides without the prefix, recipe overrides).

    Args:
        items: command-line `key=value` and `cluster.key=value` arguments, in any order.
    """
    cluster, recipe = [], []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"argument '{item}' is not of the form key=value")
        (cluster if item.startswith("cluster.") else recipe).append(item.removeprefix("cluster."))
    return cluster, recipe


def resolve_recipe(kind: str, config: str, overrides: Sequence[str], validate: bool = True) -> dict[str, Any]:
    """The recipe as the job will see it, validated against its schema before anything is queued.

    A typo found here costs nothing; found by the job it costs the queue wait.

    Args:
        kind: `pretrain` or `finetune` (picks the schema in SCHEMAS).
        config: the recipe YAML path.
        overrides: recipe `key=value` overrides (no `cluster.` ones).
        validate: False for a custom entry point, whose schema is unknown: merge only.
    """
    if not validate:
        return deep_merge(read_yaml(config), parse_overrides(overrides))
    module, _, name = SCHEMAS[kind].partition(":")
    try:
        schema = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot validate a {kind} recipe: {SCHEMAS[kind]} unavailable ({e})") from None
    return config_to_dict(load_config(schema, config, overrides))
