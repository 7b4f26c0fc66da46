"""Typed configuration: dataclass defaults <- YAML file (which may `extends:` another) <- CLI overrides.

One merge, in one place (dinov2's `utils/config.py` shape, torchtitan's typed sections). A schema is
a tree of dataclasses; every leaf has a type annotation that the loader enforces. Errors are one line
that names the dotted key, plus the closest valid key for a typo, because a cluster job that dies
twenty minutes into its queue wait on `optim.lr_sheduler` is the most expensive typo there is.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

EXTENDS_KEY = "extends"


class ConfigError(ValueError):
    """A user-facing configuration mistake; its message is one line naming the key."""


# --------------------------------------------------------------------------- reading YAML

class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping.

    Plain YAML keeps the last value silently, so `lr: 1e-3` ... `lr: 5e-4` in a long recipe would
    train with whichever came later; here it is an error naming the key and both lines.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, it is not a key
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader gives its own error below
                continue
            if first is None:
                seen[key] = line
            else:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (lines {first} and {line})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(stream: Any) -> Any:
    """`yaml.safe_load` with duplicate keys refused (see `UniqueKeyLoader`)."""
    return yaml.load(stream, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, resolving `extends: other.yaml` (relative to the file) recursively.

    Args:
        path: the YAML file.
    Returns:
        The merged mapping: the extended file's values overridden by this file's.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config 'extends' cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = load_yaml_text(f)
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"{path}: invalid YAML: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base_ref = data.pop(EXTENDS_KEY, None)
    if base_ref is None:
        return data
    base = read_yaml(path.parent / base_ref, (*_seen, path))
    return deep_merge(base, data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `update` into a copy of `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn `["optim.lr=1e-3", "data.global_size=[64,32]"]` into a nested mapping.

    Values are parsed as YAML scalars / flow lists, so `1e-3` is a float, `[64, 32]` a list,
    `null` None and `true` a bool.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is both a value and a section")
        node[parts[-1]] = value
    return nested


# --------------------------------------------------------------------------- typed building

def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, converting only where lossless (int -> float, list -> tuple)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"'{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"'{key}': must be one of {list(get_args(tp))}, got {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}': expected a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"'{key}': expected {len(args)} values, got {len(value)}: {list(value)!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        items = [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"'{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads `5e-4` (no dot) as a string: accept it where a float is due.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"'{key}': expected a string, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"'{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(schema: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `schema` from a mapping, strictly.

    Args:
        schema: a dataclass type whose fields may themselves be dataclasses.
        data: the values; missing fields take their defaults.
        prefix: dotted path of this section, for error messages.
    A schema may define a classmethod `prepare_config_data(data) -> dict`, applied to `data` first.

    Raises:
        ConfigError: unknown key (with a suggestion), wrong type, missing required value, or a
            `__post_init__` validation failure, each naming the dotted key.
    """
    prepare = getattr(schema, "prepare_config_data", None)
    if prepare is not None:  # a schema that reads past parts of another's recipe (EvaluateConfig)
        data = prepare(data)
    hints = get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    dotted = (prefix + ".") if prefix else ""
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{dotted}{close[0]}'?)" if close else f" (valid keys: {', '.join(fields)})"
            raise ConfigError(f"unknown config key '{dotted}{key}'{hint}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        tp = hints[name]
        if name in data:
            kwargs[name] = _coerce(data[name], tp, dotted + name)
        elif _is_dataclass_type(tp) and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            kwargs[name] = from_dict(tp, {}, prefix=dotted + name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config value '{dotted}{name}'")
    try:
        return schema(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        where = prefix or schema.__name__
        raise ConfigError(f"'{where}': {e}") from None


def config_to_dict(cfg: Any) -> Any:
    """Plain YAML-safe structure (dicts, lists, scalars) of a config dataclass tree."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """The one config merge: dataclass defaults <- YAML `path` (with `extends`) <- dotted overrides.

    Args:
        schema: the top-level config dataclass (e.g. `PretrainConfig`).
        path: a YAML file, or None for defaults only.
        overrides: `key.sub=value` strings from the command line.
    """
    data = read_yaml(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(overrides))
    return from_dict(schema, data)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: temp file + rename)."""
    from personvit.atomic_write import atomic_write

    atomic_write(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None))
