"""Typed configuration of ``mosear eval`` (``EvalConfig``) and its parts.

An evaluation is the cross product checkpoint × benchmark × setting; every field that changes a
unit's predictions enters that unit's cache hash (:mod:`mosear.evaluate.units`), every field that
only changes how the work is scheduled (workers, Ray address, progress bars) does not.

Example (``configs/eval.yaml``, used as ``mosear eval --config configs/eval.yaml``)::

    checkpoints: [runs/mose/adapter, runs/lora/adapter]
    benchmarks:
      - {name: camer, format: camer, path: mined/, shards: shards/}
      - {name: mer2023, format: mer2023, path: MER2023/label-6way.npz, shards: shards-mer/}
    ar_sweep: [0.1, 0.3, 0.5]
    output: reports/
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mosear.config import INPUT, LOCATION, SCHEDULING, WHOLE_RUN, StageConfig
from mosear.evaluate.endpoint import EndpointConfig
from mosear.secrets import ApiKeyEnv, ApiUrl

__all__ = [
    "BenchmarkSpec",
    "SettingSpec",
    "JudgeConfig",
    "EvalConfig",
    "DEFAULT_SETTINGS",
    "CALIBRATED_SETTING",
    "CalibrationConfig",
    "ARVariant",
    "BENCHMARK_FORMATS",
]

BENCHMARK_FORMATS = ("camer", "mined", "mer2023", "dfew", "emer", "mafw")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def safe_name(v: str) -> str:
    """A name that becomes part of a file name: letters, digits, ``_ - .``, not only dots."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", v) or set(v) == {"."}:
        raise ValueError("use only letters, digits, '_', '-', '.' (it becomes part of a file name)")
    return v


class BenchmarkSpec(_Part):
    """One benchmark: where its label/reference files are and where the media of its keys are."""

    name: str = Field(description="name used in reports and unit file names ([A-Za-z0-9_-.])")
    format: Literal["camer", "mined", "mer2023", "dfew", "emer", "mafw"] = Field(
        description="reader: camer/mined (three subset JSON files), mer2023 (npz), dfew (fold CSV), "
        "emer (CSV/JSON reasoning), mafw (fold txt)"
    )
    path: str = Field(json_schema_extra=INPUT, description="the benchmark's file, or the folder holding its files")
    shards: str | list[str] | None = Field(
        default=None, json_schema_extra=INPUT,
        description="shard folder(s) (mosear shard output) holding the media of the benchmark's keys, named "
        "explicitly for every format (a mined benchmark's natural and spliced clips are in the shard folder "
        "it was mined from)",
    )
    features: str | None = Field(
        default=None,
        description="feature table (mosear.model.features) for checkpoints whose model reads features "
        "(model.inputs=features); mined benchmarks default to {path}/features.parquet",
    )
    split: str | None = Field(
        default=None,
        description="which split to read. mined: the split folder (default test: mined/test/*.json; "
        "'all' reads the top-level files holding every split, rows trained on included); camer: a split "
        "folder under path (default: the files at the top, as released); mer2023: the npz entry "
        "(default test1_corpus)",
    )
    fold: int = Field(default=1, ge=1, le=5, description="dfew/mafw: which of the five folds' test split")
    key_prefix: str | None = Field(
        default=None,
        description="dataset prefix of sample keys ({dataset}__{clip_id}); default per format "
        "(mer2023, dfew, mafw: the format name; camer: ca_mer; emer: mer2023; mined: keys are used as they are)",
    )
    text_field: str | None = Field(
        default=None, description="emer: the column/field with the reference reasoning (auto-detected)"
    )
    limit: int | None = Field(default=None, ge=1, description="evaluate only the first N items (smoke runs)")

    _name_ok = field_validator("name")(classmethod(lambda cls, v: safe_name(v)))


class SettingSpec(_Part):
    """One inference setting: attention reallocation on/off and which modality (if any) is removed.

    Removing a modality replaces its input with the neutral filler the shard contract uses for a
    missing stream: silence for audio (zeros, ``has_audio=False``), black frames for video.
    """

    name: str = Field(description="setting name in reports and unit file names ([A-Za-z0-9_-.]), e.g. ar_off, "
                      "ar_on, ar_f0.3, no_audio")
    ar: bool = Field(default=False, description="attention reallocation at inference")
    ar_fraction: float | None = Field(
        default=None, ge=0.0, le=1.0, description="share of the excess audio attention moved to video (None: model default)"
    )
    ar_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="audio share above which AR acts (None: model default)"
    )
    ar_share: Literal["mass", "token"] | None = Field(
        default=None, description="AR's audio share: attention mass or mass per key (None: the model config's ar.share)")
    ar_direction: Literal["audio", "both"] | None = Field(
        default=None, description="AR moves mass from audio keys, or from the dominant modality (None: the model "
        "config's ar.direction)")
    drop: Literal["audio", "video"] | None = Field(default=None, description="modality removed from the input")
    monitor: bool = Field(default=True, description="record per-modality attention shares (AR monitor mode)")
    calibrate: bool = Field(
        default=False,
        description="AR threshold and fraction chosen on the benchmark's validation split (the rule of "
        "mosear.model.calibrate: highest conflict-mean within one bootstrap SE of the no-AR consistent "
        "accuracy), then applied to the evaluated split; needs ar: true",
    )

    @model_validator(mode="after")
    def _calibrate_needs_ar(self) -> "SettingSpec":
        if self.calibrate and not self.ar:
            raise ValueError("calibrate: true needs ar: true (it calibrates attention reallocation)")
        if self.calibrate and any(v is not None for v in (self.ar_fraction, self.ar_threshold, self.ar_share,
                                                          self.ar_direction)):
            raise ValueError("calibrate: true chooses ar_fraction, ar_threshold, ar_share and ar_direction itself "
                             "(among calibration.options); leave them unset")
        return self

    _name_ok = field_validator("name")(classmethod(lambda cls, v: safe_name(v)))


DEFAULT_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(name="ar_off"),
    SettingSpec(name="ar_on", ar=True, ar_fraction=0.5),  # f = 0.5: our default (the paper gives none)
    SettingSpec(name="no_audio", drop="audio"),
    SettingSpec(name="no_video", drop="video"),
)


CALIBRATED_SETTING = SettingSpec(name="ar_calibrated", ar=True, calibrate=True)


class ARVariant(_Part):
    """One AR variant calibration may choose (``share`` and ``direction`` of ``mosear.model.set_attention_mode``)."""

    share: Literal["mass", "token"] = Field(default="mass", description="audio share from attention mass or mass per key")
    direction: Literal["audio", "both"] = Field(default="audio", description="move mass from audio keys, or from the dominant modality")


class CalibrationConfig(_Part):
    """The grid and split AR calibration searches (``settings[].calibrate: true``)."""

    split: str = Field(default="validation", description="split of the benchmark to calibrate on (never test)")
    thresholds: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7], description="AR thresholds tried")
    fractions: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75], description="AR fractions tried (0 = no AR is always a candidate)")
    options: list[ARVariant] | None = Field(
        default=None, description="AR variants searched, each over thresholds x fractions (direction 'both' only at "
        "thresholds >= 0.5); None: the checkpoint's own model config ar.share / ar.direction only")

    @field_validator("split")
    @classmethod
    def _not_test(cls, v: str) -> str:
        if v in ("test", "all"):
            raise ValueError(f"calibrating on {v!r} would choose on the data that is reported; use a validation split")
        return v

    @field_validator("thresholds", "fractions")
    @classmethod
    def _unit_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= x <= 1.0 for x in v):
            raise ValueError("give at least one value, each in [0, 1]")
        return v


class JudgeConfig(_Part):
    """Who extracts emotion words / rates reasoning: the offline lexicon or an OpenAI-compatible endpoint."""

    kind: Literal["lexicon", "openai"] = Field(default="lexicon", description="lexicon (offline) or openai (chat endpoint)")
    synonyms: str | None = Field(
        default=None, description="synonym table (TSV: group<TAB>word,word,...); default: the shipped table"
    )
    base_url: ApiUrl = Field(default="http://127.0.0.1:8000/v1", description="OpenAI-compatible API base URL "
                             "(stored and shown without credentials)")
    model: str = Field(default="gpt-4o-mini", description="model name sent to the endpoint")
    api_key_env: ApiKeyEnv = Field(default="OPENAI_API_KEY", description="variable holding the API key (may be unset): "
                                   "MOSEAR_API_KEY* or OPENAI_API_KEY; sent only over https or to a loopback host")
    timeout_s: float = Field(default=30.0, gt=0, description="per-request timeout, seconds")
    retries: int = Field(default=3, ge=0, description="retries after the first failed request")
    backoff_s: float = Field(default=1.0, ge=0, description="first retry delay, seconds (doubles each retry)")


class EvalConfig(StageConfig):
    """``mosear eval``: checkpoints × benchmarks × settings, fanned out as Ray tasks."""

    checkpoints: list[str] = Field(
        min_length=1, json_schema_extra=WHOLE_RUN,
        description="adapter folders (training's {output}/adapter); 'base' evaluates the model without an adapter",
    )
    model: dict[str, Any] = Field(
        default_factory=dict,
        description="ModelConfig fields (preset, paths, ...) for checkpoints that carry no model config, and for 'base'",
    )
    benchmarks: list[BenchmarkSpec] = Field(min_length=1, json_schema_extra=WHOLE_RUN)
    settings: list[SettingSpec] = Field(default_factory=lambda: [s.model_copy() for s in DEFAULT_SETTINGS],
                                      json_schema_extra=WHOLE_RUN)
    ar_sweep: list[float] = Field(
        default_factory=list, json_schema_extra=WHOLE_RUN,
        description="extra AR settings, one per fraction (named ar_f{fraction}); a diagnostic on the "
        "evaluated split, never a choice (choose with settings[].calibrate on validation)",
    )
    # per unit only for calibrated settings (units.plan_units adds it there)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig, json_schema_extra=WHOLE_RUN)
    methods: dict[str, str] = Field(
        default_factory=dict, json_schema_extra=WHOLE_RUN,
        description="the report's first table: method name -> 'checkpoint/setting' (e.g. {MoSE+AR: "
        "mose/ar_calibrated}); empty: every checkpoint x setting without a modality removed",
    )
    allow_overlap: bool = Field(
        default=False, json_schema_extra=WHOLE_RUN,
        description="evaluate a checkpoint on benchmark keys it trained on (refused otherwise); the report "
        "then says so in its first line",
    )
    prediction: Literal["score", "generate"] = Field(
        default="score",
        description="closed-set label from label log-likelihoods (score) or parsed from generated text (generate)",
    )
    generate_reasoning: Literal["auto", "always", "never"] = Field(
        default="auto", description="generate text for open-vocabulary scoring (auto: benchmarks with reference text)"
    )
    max_new_tokens: int = Field(default=48, ge=1, description="generation length")
    batch_size: int = Field(default=4, ge=1, json_schema_extra=SCHEDULING, description="samples per forward pass")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    endpoint: EndpointConfig | None = Field(
        default=None, description="OpenAI-compatible chat endpoint evaluated as checkpoint 'endpoint' "
        "(mosear/evaluate/endpoint.py)")
    output: str = Field(default="reports", json_schema_extra=LOCATION, description="output folder (units/, metrics.parquet, report.html)")
    ray_address: str | None = Field(default=None, json_schema_extra=SCHEDULING, description="Ray cluster address (None: embedded Ray)")
    num_workers: int | None = Field(default=None, ge=1, json_schema_extra=SCHEDULING, description="embedded Ray CPUs (None: all)")
    cpus_per_unit: float = Field(default=1.0, gt=0, json_schema_extra=SCHEDULING, description="Ray CPUs reserved per evaluation unit")
    gpus_per_unit: float = Field(default=0.0, ge=0, json_schema_extra=SCHEDULING, description="Ray GPUs reserved per evaluation unit")
    torch_threads: int = Field(default=1, ge=1, json_schema_extra=SCHEDULING, description="torch intra-op threads inside a unit")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", json_schema_extra=SCHEDULING, description="where a unit runs the model (auto: CUDA when the unit's worker sees a GPU)"
    )
    unit_retries: int = Field(default=2, ge=0, json_schema_extra=SCHEDULING, description="Ray retries of a unit whose worker died")
    runtime_env: dict[str, Any] | None = Field(
        default=None, json_schema_extra=SCHEDULING, description="Ray runtime_env of the unit tasks (env_vars, py_modules, pip) on a cluster"
    )
    report: bool = Field(default=True, json_schema_extra=WHOLE_RUN, description="build report.html at the end")
    allow_partial: bool = Field(
        default=False, json_schema_extra=SCHEDULING,
        description="a failed unit leaves the stage failed (exit 1) unless this is true: then metrics and "
        "report are built from the units that finished and commit.json / run.json / the report name the missing ones")
    progress: bool = Field(default=True, json_schema_extra=SCHEDULING, description="tqdm progress bar over units")

    @model_validator(mode="after")
    def _unique_names(self) -> "EvalConfig":
        for what, names in (
            ("benchmarks", [b.name for b in self.benchmarks]),
            ("settings", [s.name for s in self.all_settings()]),
        ):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what}: duplicate names {dup}")
        return self

    def all_settings(self) -> list[SettingSpec]:
        """``settings`` plus one AR setting per ``ar_sweep`` fraction."""
        out = list(self.settings)
        for f in self.ar_sweep:
            out.append(SettingSpec(name=f"ar_f{f:g}", ar=True, ar_fraction=float(f)))
        return out

