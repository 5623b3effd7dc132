"""Typed, validated configuration shared by every stage.

Each stage declares a pydantic model (``ShardConfig``, ``MineConfig``, ...) deriving from
:class:`StageConfig`. A config comes from a YAML file plus ``dotted.key=value`` overrides from the
command line; the values of overrides are parsed as YAML scalars (``frames=16``, ``split=[a,b]``,
``keep_no_audio=true``). Validation happens before any work starts and a failure raises
:class:`ConfigError` naming every bad field and the reason.

The config hash (:func:`config_hash`) is what output folders record so that a rerun with a changed
config never resumes silently into an old output.

Whether a field changes what a stage writes is declared once, on the field itself::

    workers: int = Field(1, json_schema_extra=SCHEDULING)     # how fast / where: not in the hash
    shards: str = Field(..., json_schema_extra=INPUT)         # a path: its *content* is the identity
    max_steps: int = Field(20, json_schema_extra=RESUMABLE)   # in the hash, but a resume may extend it

:func:`output_fields` reads those markers (recursively into nested sections); every hash, cache key and
resume check derives from it (:mod:`mosear.identity`), so there is no list of field names to keep in sync.
A config may add facts that no field holds (:meth:`StageConfig.derived_output_fields`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python

__all__ = ["ConfigError", "StageConfig", "load_config", "parse_overrides", "config_hash", "describe_config",
           "SCHEDULING", "INPUT", "LOCATION", "RESUMABLE", "WHOLE_RUN", "affects_output", "output_fields"]

# Field markers (pydantic ``json_schema_extra``): what a field means for a stage's output identity.
SCHEDULING = {"affects_output": False}                       # workers, addresses, progress bars, retries
LOCATION = {"affects_output": False, "role": "location"}     # where the output goes (not what it holds)
INPUT = {"affects_output": False, "role": "input"}           # an input path: digested by content instead
RESUMABLE = {"affects_output": True, "resume_safe": True}    # changes the output, a resume may change it
# Changes the run's final tables but not one unit of its work (a mined shard's evidence, an eval unit):
# a unit's own identity leaves it out, the stage's identity keeps it.
WHOLE_RUN = {"affects_output": True, "per_unit": False}


def _extra(field: Any) -> dict[str, Any]:
    extra = getattr(field, "json_schema_extra", None)
    return extra if isinstance(extra, dict) else {}


def affects_output(field: Any) -> bool:
    """False for fields marked :data:`SCHEDULING`, :data:`LOCATION` or :data:`INPUT`; True otherwise."""
    return bool(_extra(field).get("affects_output", True))


def output_fields(cfg: BaseModel, *, resume: bool = False, per_unit: bool = False) -> dict[str, Any]:
    """The JSON form of ``cfg`` restricted to the fields that change its output.

    Nested sections (pydantic models) are restricted the same way. ``resume=True`` also drops the
    fields marked :data:`RESUMABLE` (what a resume from a checkpoint may change); ``per_unit=True``
    those marked :data:`WHOLE_RUN` (what one shard's or unit's result does not depend on).
    """
    out: dict[str, Any] = {}
    for name, field in type(cfg).model_fields.items():
        extra = _extra(field)
        if (not affects_output(field) or (resume and extra.get("resume_safe"))
                or (per_unit and extra.get("per_unit") is False)):
            continue
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            out[name] = output_fields(value, resume=resume, per_unit=per_unit)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            out[name] = [output_fields(v, resume=resume, per_unit=per_unit) for v in value]
        else:  # through the field's own JSON serializer (an ApiUrl is stored without credentials)
            try:
                out[name] = cfg.model_dump(mode="json", include={name})[name]
            except Exception:  # noqa: BLE001 - a value pydantic cannot serialize: as before
                out[name] = to_jsonable_python(value, fallback=str)
    derived = getattr(cfg, "derived_output_fields", None)
    if callable(derived):  # what the fields name decides the output too (a mining stage's version)
        out.update(derived())
    return out


class ConfigError(ValueError):
    """A configuration that cannot be used. The message names the field(s) and reason(s)."""


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def derived_output_fields(self) -> dict[str, Any]:
        """Facts that change the output but are no field's value, e.g. the code version of what a field
        names (``MineConfig``: every mining stage's ``name@version``). Part of :func:`output_fields`."""
        return {}

    def hash(self, exclude: set[str] | None = None) -> str:
        """Hash of every field (minus ``exclude``); see :meth:`output_hash` for the output identity."""
        return config_hash(self, exclude=exclude)

    def output_hash(self, *, resume: bool = False, per_unit: bool = False) -> str:
        """16-hex-digit hash of :func:`output_fields`: equal exactly when the output would be equal."""
        blob = json.dumps(output_fields(self, resume=resume, per_unit=per_unit), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
