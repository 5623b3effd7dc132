"""A mining pipeline is data: an ordered list of stages, built in Python or from YAML.

YAML form (a list; each item a stage name or ``{stage: NAME, params: {...}}``)::

    stages:
      - audio_egemaps
      - {stage: visual_fer, params: {detector: short_range}}
      - my_package_stage            # found through the ``mosear.stages`` entry-point group

Names resolve, in order, through mosear's own stages (:data:`BUILTIN_STAGES`, the one list of them:
an uninstalled checkout finds them too), the ``mosear.stages`` entry points (where third-party packages
register theirs; one that reuses a built-in name for another class is an error), and ``"module:Class"``
import paths.

:meth:`StagePipeline.run_batch` runs the stages in order over a batch, keeping per-stage stats and an
audit record of every dropped or failed sample (key, stage, reason, detail). After each stage it checks
the fields the stage set, sample by sample: a value the evidence table (Arrow) cannot store, or a
declared feature that is not numeric, drops that sample (``unstorable`` / ``bad_feature``), never the
shard. :meth:`StagePipeline.versions` (``name@version`` of every stage) is part of the mining hash and
:meth:`StagePipeline.feature_columns` is what the cross-fitted classifiers read.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import yaml

from mosear.mine.stage import (EVIDENCE_MODALITIES, Drop, MiningStage, Resources, StageContractError,
                               StageStats)

log = logging.getLogger(__name__)

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_STAGES", "MEDIA_FIELDS", "available_stages", "load_stage_class",
           "add_import_paths", "stored_value", "StagePipeline", "StageRaisedError"]

ENTRY_POINT_GROUP = "mosear.stages"

# The shard reader's members of a sample: media, never stored as evidence.
MEDIA_FIELDS = ("frames", "audio", "sample_rate", "meta", "key")

# Name -> "module:Class" of every stage shipped with mosear: the only list of them (pyproject registers
# no entry points for these, so the lookup works from a checkout that was never installed).
BUILTIN_STAGES: dict[str, str] = {
    "require_label": "mosear.mine.stages.basic:RequireLabelFilter",
    "signal_quality": "mosear.mine.stages.basic:SignalQualityStage",
    "audio_egemaps": "mosear.mine.stages.audio:EGeMAPSEvidence",
    "visual_fer": "mosear.mine.stages.visual:FaceExpressionEvidence",
    "text_lexicon": "mosear.mine.stages.text:LexiconTextEvidence",
    "hf_classifier": "mosear.mine.stages.hf:HFClassifierEvidence",
}


def _import_path(path: str) -> type:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"stage path {path!r}: expected 'module:Class'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _entry_points() -> dict[str, Any]:
    """Third-party stages by name. An entry point naming a built-in's own class (the metadata of an
    older mosear install) is the built-in; one that gives a built-in name to another class is refused."""
    out = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_STAGES:
            if ep.value.replace(" ", "") != BUILTIN_STAGES[ep.name]:
                dist = getattr(getattr(ep, "dist", None), "name", "an installed package")
                raise KeyError(f"mining stage name {ep.name!r} is a built-in stage, but {dist} registers "
                               f"{ep.value!r} under it ({ENTRY_POINT_GROUP!r} entry points): rename that stage")
            continue
        out[ep.name] = ep
    return out


def available_stages() -> dict[str, str]:
    """Every stage name this process can resolve -> where it comes from ("module:Class")."""
    found = dict(BUILTIN_STAGES)
    for name, ep in _entry_points().items():
        found[name] = ep.value
    return found


def load_stage_class(name: str) -> type[MiningStage]:
    """Resolve a stage name (built-in, entry point, or ``module:Class``) to its class."""
    eps = _entry_points()
    if name in BUILTIN_STAGES:
        cls = _import_path(BUILTIN_STAGES[name])
    elif name in eps:
        cls = eps[name].load()
    elif ":" in name:
        cls = _import_path(name)
    else:
        raise KeyError(
            f"unknown mining stage {name!r}; known: {sorted(available_stages())} "
            f"(third-party stages register under the {ENTRY_POINT_GROUP!r} entry-point group)"
        )
    if not (isinstance(cls, type) and issubclass(cls, MiningStage)):
        raise TypeError(f"stage {name!r} resolves to {cls!r}, which is not a MiningStage subclass")
    return cls


def add_import_paths(py_modules: Iterable[str]) -> list[str]:
    """Put the folder holding each of ``py_modules`` (uninstalled stage packages or modules,
    ``MineConfig.py_modules``) on this process's import path; returns those folders."""
    folders = [str(Path(m).resolve().parent) for m in py_modules]
    for folder in folders:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return folders


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def stored_value(v: Any) -> Any:
    """A sample field as the evidence table stores it: arrays as lists (floating ones as float32
    values), dicts as sorted JSON text, numpy scalars as Python ones; anything else unchanged."""
    if isinstance(v, np.ndarray):
        return v.astype(np.float32).tolist() if v.dtype.kind == "f" else v.tolist()
    if isinstance(v, dict):
        return json.dumps(v, default=_json_default, sort_keys=True)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _feature_problem(value: Any) -> str | None:
    """Why ``value`` is not a feature (a number or a 1-D array of numbers; None: missing), or None."""
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__} is not numeric ({exc})"
    return None if arr.ndim <= 1 else f"an array of shape {list(arr.shape)}, not a number or a 1-D vector"


def _normalise_spec(item: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and "stage" in item:
        extra = set(item) - {"stage", "params"}
        if extra:
            raise ValueError(f"stage entry {item!r}: unknown keys {sorted(extra)} (use stage/params)")
        return str(item["stage"]), dict(item.get("params") or {})
    raise ValueError(f"stage entry {item!r}: expected a name or {{stage: NAME, params: {{...}}}}")


class StageRaisedError(RuntimeError):
    """A mining stage raised on a sample (a bug or an environment fault, not a data error): the shard fails."""


class StagePipeline:
    """An ordered list of stages run over batches of samples in one worker."""

    def __init__(self, stages: Iterable[MiningStage]) -> None:
        self.stages: list[MiningStage] = list(stages)
        names = [s.stage_name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique in a pipeline, got {names}")
        owner: dict[str, str] = {}
        for s in self.stages:
            s.check_declarations()
            for f in s.features:
                if f in owner:
                    raise StageContractError(f"feature {f!r} is declared by stages {owner[f]} and {s.stage_name}")
                owner[f] = s.stage_name
        self.stats = {s.stage_name: StageStats(s.stage_name, s.version) for s in self.stages}
        self._types: dict[str, pa.DataType] = {}  # Arrow type of each field so far in this shard
        self._ready = False

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: list[Any]) -> "StagePipeline":
        """Build from a list of names / ``{stage, params}`` dicts (the YAML ``stages:`` list)."""
        stages = []
        for item in spec:
            name, params = _normalise_spec(item)
            stages.append(load_stage_class(name)(**params))
        return cls(stages)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StagePipeline":
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        spec = data.get("stages") if isinstance(data, dict) else data
        if not isinstance(spec, list):
            raise ValueError(f"{path}: expected a list of stages (or a mapping with 'stages:')")
        return cls.from_spec(spec)

    # -- description ------------------------------------------------------------------------------
    @property
    def resources(self) -> Resources:
        total = Resources(cpus=1.0, gpus=0.0)
        for s in self.stages:
            total = total + s.resources
        return total

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": s.stage_name, "version": s.version, "adds": list(s.fields), "features": dict(s.features),
             "drop_reasons": list(s.drop_reasons), "cpus": s.resources.cpus, "gpus": s.resources.gpus}
            for s in self.stages
        ]

    def versions(self) -> list[str]:
        """``name@version`` of every stage, in order: part of the mining hash and of ``conflicts.parquet``."""
        return [f"{s.stage_name}@{s.version}" for s in self.stages]

    def feature_columns(self) -> dict[str, list[str]]:
        """``{modality: [field, ...]}`` over :data:`EVIDENCE_MODALITIES`, fields in pipeline order: the
        columns each modality's cross-fitted classifier concatenates as its input."""
        out: dict[str, list[str]] = {m: [] for m in EVIDENCE_MODALITIES}
        for s in self.stages:
            for field, modality in s.features.items():
                out[modality].append(field)
        return out

    # -- execution --------------------------------------------------------------------------------
    def setup(self) -> None:
        if not self._ready:
            for s in self.stages:
                s.setup()
            self._ready = True

    def _call(self, stage: MiningStage, batch: list[dict[str, Any]]) -> list[Any]:
        out = stage.process_batch(batch)
        if not isinstance(out, list) or len(out) != len(batch):
            raise StageContractError(
                f"stage {stage.stage_name}: process_batch returned {type(out).__name__} of "
                f"{len(out) if hasattr(out, '__len__') else '?'} results for {len(batch)} samples"
            )
        return out

    def run_batch(
        self, samples: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Run every stage in order. Returns ``(kept samples, audit rows)``.

        An audit row is ``{key, stage, reason, detail}``: ``reason`` is the stage's drop reason (a data
        error or a filter, declared in ``drop_reasons``). An error is never a result: when a batch call
        raises, the stage is retried sample by sample to name the sample, and the first exception is
        raised as :class:`StageRaisedError` (the stage, the key, the exception and its last frame), which
        fails the shard: it is not committed, and a rerun after the fix mines it again.
        """
        self.setup()
        audit: list[dict[str, Any]] = []
        batch = samples
        for stage in self.stages:
            st = self.stats[stage.stage_name]
            st.samples_in += len(batch)
            before = [frozenset(s) for s in batch]  # stages may set fields in place
            t0 = time.perf_counter()
            try:
                results = self._call(stage, batch) if batch else []
            except StageContractError:
                raise
            except Exception:  # one sample may be the cause: isolate it
                results = []
                for s in batch:
                    try:
                        results.extend(self._call(stage, [s]))
                    except StageContractError:
                        raise
                    except Exception as exc:
                        st.errors += 1
                        tb = traceback.extract_tb(exc.__traceback__)
                        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
                        raise StageRaisedError(
                            f"stage {stage.stage_name} raised on sample {s.get('key')}: {type(exc).__name__}: "
                            f"{exc}{where} (a stage returns Drop(reason) for a sample it cannot use; any "
                            f"exception fails the shard, which a rerun after the fix mines again)") from exc
            kept = []
            for s, r, keys in zip(batch, results, before):
                if not isinstance(r, Drop):
                    missing = [f for f in stage.fields if f not in r]
                    if missing:
                        raise StageContractError(f"stage {stage.stage_name} did not set declared fields {missing}")
                    r = self._check_fields(stage, r, keys)
                if isinstance(r, Drop):
                    st.dropped[r.reason] = st.dropped.get(r.reason, 0) + 1
                    audit.append({"key": s.get("key"), "stage": stage.stage_name, "reason": r.reason,
                                  "detail": r.detail})
                    continue
                kept.append(r)
            st.seconds += time.perf_counter() - t0
            st.samples_out += len(kept)
            batch = kept
        return batch, audit

    def _check_fields(self, stage: MiningStage, sample: dict[str, Any], before: frozenset[str]
                      ) -> dict[str, Any] | Drop:
        """``sample``, or a Drop when a field ``stage`` set cannot go into the shard's evidence table.

        Checked: every declared field and every new one. A declared feature must be a number or a 1-D
        numeric array (``bad_feature``); a value must convert to Arrow and agree with the type the same
        field had in the shard's earlier samples (ints widen to floats; ``unstorable`` otherwise). The
        first sample that stores a field fixes its type, so the result does not depend on batching.
        """
        new_types = {}
        for f in dict.fromkeys((*stage.fields, *(k for k in sample if k not in before))):
            if f in MEDIA_FIELDS or sample.get(f) is None:
                continue
            value = sample[f]
            if f in stage.features and (why := _feature_problem(value)) is not None:
                return Drop("bad_feature", f"feature {f!r}: {why}")
            try:
                t = pa.array([stored_value(value)]).type
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                return Drop("unstorable", f"field {f!r}: {type(value).__name__} value Arrow cannot store ({exc})")
            old = self._types.get(f)
            if old is not None and old != t:
                try:
                    t = pa.unify_schemas([pa.schema([(f, old)]), pa.schema([(f, t)])],
                                         promote_options="permissive").field(f).type
                except (pa.ArrowException, TypeError) as exc:
                    return Drop("unstorable", f"field {f!r}: {t} where earlier samples of the shard have {old} ({exc})")
            new_types[f] = t
        self._types.update(new_types)
        return sample

    def reset_stats(self) -> dict[str, StageStats]:
        """Start a new shard: fresh stats and field types; returns the old stats."""
        old = self.stats
        self.stats = {s.stage_name: StageStats(s.stage_name, s.version) for s in self.stages}
        self._types = {}
        return old
