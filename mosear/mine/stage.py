"""The mining stage API: a small class with declared resources, per-worker setup and a batch method.

A stage sees samples of the shard reader's form (``docs/contracts.md``)::

    {"key": str, "frames": uint8[T, H, W, 3], "audio": float32[N] in [-1, 1],
     "sample_rate": 16000, "meta": dict}

and returns, for each one, either the sample with the fields it declares (:attr:`MiningStage.adds` and
:attr:`MiningStage.features`) filled in, or a :class:`Drop` carrying the reason (one of
:attr:`MiningStage.drop_reasons`). Stages never return error strings: a stage that raises on a sample is
caught by the pipeline, which records the sample with the error (stage name, exception) in the audit
table and goes on.

A field declared in :attr:`MiningStage.features` is evidence of one modality (:data:`EVIDENCE_MODALITIES`):
the cross-fitted classifier of that modality takes it as input (``mosear.mine.assemble``), whoever wrote
the stage. Nothing else lists feature columns.

Two shapes cover most stages:

- :class:`MiningStage` — override :meth:`process` (one sample) or :meth:`process_batch` (a list, for
  models that batch);
- :class:`FilterStage` — override only :meth:`FilterStage.keep` returning ``True`` or
  ``(False, reason)``; the base counts kept/dropped and records why.

Third-party stages register under the ``mosear.stages`` entry-point group (see ``docs/mining.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["Resources", "Drop", "MiningStage", "FilterStage", "StageContractError", "audio_absence",
           "SILENCE_PEAK", "EVIDENCE_MODALITIES", "PIPELINE_DROP_REASONS"]

# The modalities a stage's features may feed: one cross-fitted classifier each (mosear/mine/assemble.py).
EVIDENCE_MODALITIES: tuple[str, ...] = ("audio", "visual", "text")

# Reasons the pipeline itself drops a sample for (beside each stage's own ``drop_reasons``):
# "error" the stage raised on it; "unstorable" a field it set is a value Arrow cannot store (or of another
# type than the same field of earlier samples of the shard); "bad_feature" a declared feature is not a
# number or a 1-D array of numbers.
PIPELINE_DROP_REASONS: tuple[str, ...] = ("error", "unstorable", "bad_feature")

# A waveform whose peak stays below this (full scale 1.0; about -80 dBFS) carries no voice.
SILENCE_PEAK = 1e-4


def audio_absence(sample: dict[str, Any], min_seconds: float = 0.0) -> str | None:
    """Why ``sample`` has no audio evidence, or None when it has some. Every audio stage asks this first.

    ``"no_audio_stream"``: the clip has no audio track (``meta.has_audio`` false; the shard stage then
    stores silence, which must never be scored as a voice); ``"empty"``: no samples; ``"silent"``: the
    signal_quality stage flagged it (``audio_silent``) or its peak is below :data:`SILENCE_PEAK`;
    ``"too_short"``: shorter than ``min_seconds``.
    """
    import numpy as np

    if (sample.get("meta") or {}).get("has_audio") is False:
        return "no_audio_stream"
    audio = np.asarray(sample.get("audio", ()), dtype=np.float32)
    if audio.size == 0:
        return "empty"
    if sample.get("audio_silent") is True or float(np.abs(audio).max()) < SILENCE_PEAK:
        return "silent"
    if audio.size < min_seconds * int(sample.get("sample_rate") or 16000):
        return "too_short"
    return None


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs. ``gpus`` may be fractional (several actors on one GPU)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __add__(self, other: "Resources") -> "Resources":
        # Stages of one pipeline run in one worker one after the other: CPUs are shared, the
        # largest GPU share is what the worker must hold.
        return Resources(cpus=max(self.cpus, other.cpus), gpus=max(self.gpus, other.gpus))


@dataclass(frozen=True)
class Drop:
    """Returned by a stage instead of a sample: the sample leaves the pipeline, with ``reason``."""

    reason: str
    detail: str = ""


class StageContractError(RuntimeError):
    """A stage broke the API (wrong output count, a declared field missing): a bug in the stage."""


class MiningStage:
    """Base of every mining stage.

    Class attributes (plain data, read by the pipeline and the docs):

    - ``name``: the stage's name in pipelines and stats (defaults to the class name);
    - ``version``: part of the mining hash as ``name@version`` (change it whenever the stage's output
      changes: every shard is mined again) and recorded in ``conflicts.parquet`` (``stages`` column);
    - ``resources``: :class:`Resources` one worker needs;
    - ``adds``: the sample fields the stage sets (checked after every batch);
    - ``features``: ``{field: modality}``, the fields (set like ``adds``; listing them in ``adds`` too is
      not needed) that are evidence of a modality in :data:`EVIDENCE_MODALITIES`: a number or a
      fixed-length float vector per sample (NaN: no evidence), input of that modality's classifier;
    - ``drop_reasons``: every reason the stage may drop a sample for.

    The pipeline reads these from the stage *instance* after construction, so a stage whose outputs
    depend on its parameters may set them in ``__init__`` (``hf_classifier`` does: its output field,
    modality, name and GPU share are parameters); everything else should leave them on the class.

    Constructor keyword arguments are the stage's parameters (from YAML ``params:``); keep them plain
    values so a pipeline can be shipped to Ray workers and recorded in the config hash.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    resources: ClassVar[Resources] = Resources()
    adds: ClassVar[tuple[str, ...]] = ()
    features: ClassVar[Mapping[str, str]] = {}
    drop_reasons: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        if params:
            raise TypeError(f"{type(self).__name__} takes no parameters, got {sorted(params)}")

    @property
    def stage_name(self) -> str:
        return self.name or type(self).__name__

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the stage sets: :attr:`adds`, then the :attr:`features` not already in it."""
        return tuple(dict.fromkeys((*self.adds, *self.features)))

    def check_declarations(self) -> None:
        """Raise :class:`StageContractError` when the declarations are not plain data of the right shape."""
        who = f"stage {self.stage_name}"
        if not isinstance(self.version, str) or not self.version:
            raise StageContractError(f"{who}: version must be a non-empty string, got {self.version!r}")
        if isinstance(self.adds, str) or not all(isinstance(f, str) for f in self.adds):
            raise StageContractError(f"{who}: adds must be a tuple of field names, got {self.adds!r}")
        if not isinstance(self.features, Mapping):
            raise StageContractError(f"{who}: features must be a mapping field -> modality, got {self.features!r}")
        bad = {f: m for f, m in self.features.items() if not isinstance(f, str) or m not in EVIDENCE_MODALITIES}
        if bad:
            raise StageContractError(f"{who}: features {bad}: the modality must be one of {list(EVIDENCE_MODALITIES)}")

    def setup(self) -> None:
        """Per-worker initialisation (load a model once). Called before the first batch."""

    def process(self, sample: dict[str, Any]) -> dict[str, Any] | Drop:
        """One sample in, the same sample with :attr:`adds` set (or a :class:`Drop`) out."""
        raise NotImplementedError(f"{self.stage_name} implements neither process nor process_batch")

    def process_batch(self, samples: list[dict[str, Any]]) -> list[dict[str, Any] | Drop]:
        """A list of samples in, one result per sample out, in order. Default: :meth:`process` each."""
        return [self.process(s) for s in samples]


class FilterStage(MiningStage):
    """A stage that only keeps or drops: implement :meth:`keep`. It adds no fields."""

    def keep(self, sample: dict[str, Any]) -> bool | tuple[bool, str]:
        raise NotImplementedError

    def process(self, sample: dict[str, Any]) -> dict[str, Any] | Drop:
        verdict = self.keep(sample)
        if verdict is True:
            return sample
        if verdict is False:
            return Drop(self.drop_reasons[0] if self.drop_reasons else "filtered")
        ok, reason = verdict
        return sample if ok else Drop(reason)


@dataclass
class StageStats:
    """Counts and time of one stage in one worker (merged across workers with :meth:`merge`)."""

    name: str
    version: str = "1"
    samples_in: int = 0
    samples_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0

    def merge(self, other: "StageStats") -> "StageStats":
        self.samples_in += other.samples_in
        self.samples_out += other.samples_out
        self.errors += other.errors
        self.seconds += other.seconds
        for k, v in other.dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + v
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "in": self.samples_in, "out": self.samples_out,
            "dropped": dict(self.dropped), "errors": self.errors, "seconds": round(self.seconds, 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageStats":
        return cls(name=d["name"], version=d.get("version", "1"), samples_in=d["in"], samples_out=d["out"],
                   dropped=dict(d.get("dropped", {})), errors=d.get("errors", 0), seconds=d.get("seconds", 0.0))
