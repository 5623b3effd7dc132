"""A mining pipeline is data: an ordered list of stages, built in Python or from YAML.

YAML form (a list; each item a stage name or ``{stage: NAME, params: {...}}``)::

    stages:
      - audio_egemaps
      - {stage: visual_fer, params: {detector: short_range}}
      - my_package_stage            # found through the ``mosear.stages`` entry-point group

Names resolve, in order, through the ``mosear.stages`` entry points (third-party packages register
there; mosear's own stages are registered there too), mosear's built-in table (so an uninstalled
checkout works), and ``"module:Class"`` import paths.

:meth:`StagePipeline.run_batch` runs the stages in order over a batch, keeping per-stage stats and an
audit record of every dropped or failed sample (key, stage, reason, detail).
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Iterable

import yaml

from mosear.mine.stage import Drop, MiningStage, Resources, StageContractError, StageStats

log = logging.getLogger(__name__)

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_STAGES", "available_stages", "load_stage_class", "StagePipeline"]

ENTRY_POINT_GROUP = "mosear.stages"

# Name -> "module:Class" for stages shipped with mosear (also in pyproject's entry points).
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


def available_stages() -> dict[str, str]:
    """Every stage name this process can resolve -> where it comes from ("module:Class")."""
    found = dict(BUILTIN_STAGES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def load_stage_class(name: str) -> type[MiningStage]:
    """Resolve a stage name (entry point, built-in, or ``module:Class``) to its class."""
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name in eps:
        cls = eps[name].load()
    elif name in BUILTIN_STAGES:
        cls = _import_path(BUILTIN_STAGES[name])
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


def _normalise_spec(item: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and "stage" in item:
        extra = set(item) - {"stage", "params"}
        if extra:
            raise ValueError(f"stage entry {item!r}: unknown keys {sorted(extra)} (use stage/params)")
        return str(item["stage"]), dict(item.get("params") or {})
    raise ValueError(f"stage entry {item!r}: expected a name or {{stage: NAME, params: {{...}}}}")


class StagePipeline:
    """An ordered list of stages run over batches of samples in one worker."""

    def __init__(self, stages: Iterable[MiningStage]) -> None:
        self.stages: list[MiningStage] = list(stages)
        names = [s.stage_name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique in a pipeline, got {names}")
        self.stats = {s.stage_name: StageStats(s.stage_name, s.version) for s in self.stages}
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
            {"name": s.stage_name, "version": s.version, "adds": list(s.adds),
             "drop_reasons": list(s.drop_reasons), "cpus": s.resources.cpus, "gpus": s.resources.gpus}
            for s in self.stages
        ]

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

        An audit row is ``{key, stage, reason, detail}``: ``reason`` is the stage's drop reason, or
        ``"error"`` when the stage raised on that sample (``detail``: the exception and its last frame).
        When a batch call raises, the stage is retried sample by sample so one bad sample does not
        take its batch-mates down.
        """
        self.setup()
        audit: list[dict[str, Any]] = []
        batch = samples
        for stage in self.stages:
            st = self.stats[stage.stage_name]
            st.samples_in += len(batch)
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
                        tb = traceback.extract_tb(exc.__traceback__)
                        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
                        results.append(Drop("error", f"{type(exc).__name__}: {exc}{where}"))
                        st.errors += 1
            kept = []
            for s, r in zip(batch, results):
                if isinstance(r, Drop):
                    st.dropped[r.reason] = st.dropped.get(r.reason, 0) + 1
                    audit.append({"key": s.get("key"), "stage": stage.stage_name, "reason": r.reason,
                                  "detail": r.detail})
                    continue
                missing = [f for f in stage.adds if f not in r]
                if missing:
                    raise StageContractError(f"stage {stage.stage_name} did not set declared fields {missing}")
                kept.append(r)
            st.seconds += time.perf_counter() - t0
            st.samples_out += len(kept)
            batch = kept
        return batch, audit

    def reset_stats(self) -> dict[str, StageStats]:
        old = self.stats
        self.stats = {s.stage_name: StageStats(s.stage_name, s.version) for s in self.stages}
        return old
