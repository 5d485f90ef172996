"""Load and validate configuration: packaged defaults, a user YAML file, then --set overrides.

Every key must exist in the schema (``schema.py``); the settings are checked after each source
is merged, before any Spark work starts, so a typo or a bad value is one clear line naming the
source and the key (exit 2) rather than a stack trace mid-run.
"""

from __future__ import annotations

import codecs
import copy
import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from custseg.config import schema
from custseg.config.schema import (  # noqa: F401  (re-exported)
    CLUSTER_ALGORITHMS,
    CLUSTER_FEATURES,
    FIELDS,
    FORMATS,
    SPARK_CHARSETS,
)
from custseg.errors import ConfigError

_FREE_DICTS = {"spark.conf", "dashboard.actions", "audiences"}
# given whole, so renamed segments can drop old keys
_REPLACED_DICTS = {"dashboard.actions", "audiences"}

Config = dict[str, Any]


def spark_charset(encoding: str) -> str:
    """The Spark CSV charset for an encoding name (``latin-1`` -> ``iso-8859-1``)."""
    return SPARK_CHARSETS[codecs.lookup(encoding).name]


def load_defaults() -> Config:
    """The packaged defaults (conf/defaults.yaml)."""
    text = resources.files("custseg.config").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _read_yaml(path: str) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"config file {path}: bad value ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys")
    return data


def _merge(base: Config, override: Config, prefix: str = "") -> None:
    """``override`` into ``base``: mappings key by key, except those given whole."""
    for key, value in override.items():
        path = f"{prefix}{key}"
        if isinstance(value, dt.date):
            value = value.isoformat()
        current = base.get(key)
        if path in _REPLACED_DICTS or not isinstance(value, dict) \
                or not isinstance(current, dict):
            base[key] = copy.deepcopy(value)
        elif path in _FREE_DICTS:
            current.update(value)
        else:
            _merge(current, value, f"{path}.")


_WANTS = {"int_type": "an integer", "int_parsing": "an integer", "float_type": "a number",
          "float_parsing": "a number", "bool_type": "a boolean", "bool_parsing": "a boolean",
          "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
          "model_type": "a mapping", "model_attributes_type": "a mapping"}


def _path(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _message(e: dict) -> str:
    """One pydantic error as a sentence naming the key."""
    path = _path(e["loc"])
    kind, ctx, got = e["type"], e.get("ctx") or {}, e.get("input")
    if kind == "extra_forbidden":
        return f"unknown config key '{path}'"
    if kind in _WANTS:
        return f"'{path}' must be {_WANTS[kind]}, got {got!r}"
    if kind == "value_error":
        msg = str(ctx.get("error", e["msg"]))
        return msg if msg.startswith("'") else f"'{path}' {msg}"
    if kind == "greater_than_equal":
        return f"'{path}' must be at least {ctx['ge']}, got {got!r}"
    if kind == "greater_than":
        return (f"'{path}' must be positive, got {got!r}" if ctx["gt"] == 0
                else f"'{path}' must be more than {ctx['gt']}, got {got!r}")
    if kind == "less_than_equal":
        return f"'{path}' must be at most {ctx['le']}, got {got!r}"
    if kind == "string_too_short":
        return f"'{path}' must not be empty"
    if kind == "too_short":
        return f"'{path}' must be a non-empty list"
    return f"'{path}': {e['msg']}, got {got!r}"


def _keys(values: Config, prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        out += _keys(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return out


def _checked(cfg: Config, sources: list[tuple[str, Config]]) -> Config:
    """``cfg`` through the schema; the first problem as one line naming the key and the last
    of ``sources`` (name, values given) that gave that key or a key under it."""
    try:
        return schema.check(cfg)
    except ValidationError as exc:
        e = exc.errors()[0]
        at = ".".join(p for p in e["loc"] if isinstance(p, str))
        given = [name for name, values in sources for k in _keys(values)
                 if not at or k == at or k.startswith(f"{at}.") or at.startswith(f"{k}.")]
        raise ConfigError(f"{given[-1] if given else 'conf/defaults.yaml'}: "
                          f"{_message(e)}") from None


def _parse_set(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError):
        value = raw
    return key.strip(), value


def _nest(key: str, value: Any) -> Config:
    out: Config = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def validate(cfg: Config) -> None:
    """Raise ``ConfigError`` unless ``cfg`` meets the schema (types, ranges, rules between
    keys)."""
    _checked(cfg, [])


def load_config(conf_file: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides; validated."""
    cfg = load_defaults()
    sources = [(f"config file {conf_file}", _read_yaml(conf_file))] if conf_file else []
    for item in overrides or []:
        key, value = _parse_set(item)
        sources.append((f"--set {item}", _nest(key, value)))
    for _, values in sources:
        _merge(cfg, values)
    return _checked(cfg, sources)
