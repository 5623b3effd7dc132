"""Typed, validated configuration shared by every stage.

Each stage declares a pydantic model (``ShardConfig``, ``MineConfig``, ...) deriving from
:class:`StageConfig`. A config comes from a YAML file plus ``dotted.key=value`` overrides from the
command line; the values of overrides are parsed as YAML scalars (``frames=16``, ``split=[a,b]``,
``keep_no_audio=true``). Validation happens before any work starts and a failure raises
:class:`ConfigError` naming every bad field and the reason.

The config hash (:func:`config_hash`) is what output folders record so that a rerun with a changed
config never resumes silently into an old output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python

__all__ = ["ConfigError", "StageConfig", "load_config", "parse_overrides", "config_hash", "describe_config"]


class ConfigError(ValueError):
    """A configuration that cannot be used. The message names the field(s) and reason(s)."""


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def hash(self, exclude: set[str] | None = None) -> str:
        return config_hash(self, exclude=exclude)


C = TypeVar("C", bound=StageConfig)


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[x, y]"]`` into a nested dict; values are YAML scalars/flow collections."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is both a value and a section")
        node[parts[-1]] = value
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _format_validation_error(cls: type[BaseModel], exc: ValidationError, source: str) -> str:
    lines = [f"invalid {cls.__name__} ({source}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `mosear <stage> --help-config`)"
        got = err.get("input")
        got_s = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  - {field}: {msg}{got_s}")
    return "\n".join(lines)


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    **kwargs: Any,
) -> C:
    """Build ``cls`` from an optional YAML file, then overrides, then keyword arguments.

    Raises :class:`ConfigError` (never a bare pydantic error) naming each bad field.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
        source = str(p)
    if overrides:
        extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        data = _deep_merge(data, extra)
        source += " + overrides"
    if kwargs:
        data = _deep_merge(data, {k: v for k, v in kwargs.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(cls, exc, source)) from None


def config_hash(cfg: BaseModel, exclude: set[str] | None = None) -> str:
    """Stable 16-hex-digit hash of a config's JSON form (sorted keys), minus ``exclude``d fields.

    Stages exclude fields that do not change the output (worker counts, progress bars, Ray address).
    """
    payload = cfg.model_dump(mode="json", exclude=exclude)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe_config(cls: type[BaseModel], prefix: str = "") -> str:
    """One line per field (nested sections dotted, as overrides spell them): default and help text.

    What ``mosear <stage> --help-config`` prints.
    """
    lines: list[str] = [] if prefix else [f"{cls.__name__} fields (set with --config FILE or key=value):"]
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.append(describe_config(ann, prefix=f"{prefix}{name}."))
            continue
        if field.is_required():
            shown = "(required)"
        else:
            default = field.get_default(call_default_factory=True)
            shown = json.dumps(to_jsonable_python(default, fallback=str))
        lines.append(f"  {prefix}{name} = {shown}" + (f"  -- {field.description}" if field.description else ""))
    return "\n".join(lines)
