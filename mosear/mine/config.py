"""``MineConfig``: what ``mosear mine`` / :func:`mosear.mine.run_mine` reads (YAML + overrides)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mosear.config import INPUT, LOCATION, SCHEDULING, WHOLE_RUN, ConfigError, StageConfig
from mosear.mine.splits import SplitConfig
from mosear.secrets import ApiKeyEnv, ApiUrl

DEFAULT_STAGES: list[Any] = ["require_label", "signal_quality", "audio_egemaps", "visual_fer", "text_lexicon"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CrossFitConfig(_Section):
    n_folds: int = Field(5, ge=2, description="k of the grouped k-fold cross-fitting")
    c: float = Field(0.5, gt=0, description="inverse L2 strength of the logistic regression")
    group_by: Literal["speaker", "take"] = Field(
        "speaker", description="fold groups; 'speaker' falls back to source takes when speakers are too few")
    seed: int = 0


class TrainMixConfig(_Section):
    """What enters ``train_mix.parquet`` besides the natural and human-rated rows of the train split."""

    splice_target: Literal["none", "face", "voice"] = Field(
        "none", description="the target rule under which spliced (counterfactual) clips enter the training "
        "mix: none = they do not (default; a splice has no true emotion); face = the face's emotion (train to "
        "follow the face: a counterfactual augmentation); voice = the voice's emotion")

    @model_validator(mode="before")
    @classmethod
    def _no_coin_flip(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("splice_target") not in (None, "none", "face", "voice"):
            raise ValueError(f"train_mix.splice_target: {data['splice_target']!r}: a spliced clip has no true "
                             "emotion, so its training target needs a rule: face | voice, or none to leave "
                             "splices out of the training mix")
        return data


class LLMConfig(_Section):
    base_url: ApiUrl | None = Field(None, description="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 "
                                    "(stored and shown without credentials)")
    model: str = "default"
    api_key_env: ApiKeyEnv | None = Field(None, description="variable holding the API key: MOSEAR_API_KEY* or "
                                          "OPENAI_API_KEY; sent only over https or to a loopback host")
    timeout_s: float = 30.0


class MineConfig(StageConfig):
    """Mining over a shard folder. Every CLI field can be overridden as ``key=value``."""

    shards: str | None = Field(None, json_schema_extra=INPUT, description="input shard folder (output of `mosear shard`)")
    output: str = Field("runs/mined", json_schema_extra=LOCATION, description="output folder (mined/)")
    stages: list[Any] = Field(default_factory=lambda: list(DEFAULT_STAGES),
                              description="the pipeline: stage names or {stage, params} mappings, in order")
    batch_size: int = Field(8, ge=1, description="samples per stage call")
    workers: int = Field(1, ge=1, json_schema_extra=SCHEDULING, description="Ray actors mining shards in parallel")
    address: str | None = Field(None, json_schema_extra=SCHEDULING, description="Ray address (None: embedded Ray)")
    py_modules: list[str] = Field(default_factory=list, json_schema_extra=INPUT, description="package folders holding stages that are not "
                                  "installed, put on the workers' import path (a filesystem they share; on a "
                                  "cluster ship them with the job's runtime_env py_modules instead)")
    margin: float = Field(0.1, ge=0, lt=1, json_schema_extra=WHOLE_RUN, description="confidence margin of subset assignment")
    crossfit: CrossFitConfig = Field(default_factory=CrossFitConfig, json_schema_extra=WHOLE_RUN)
    llm: LLMConfig = Field(default_factory=LLMConfig, json_schema_extra=WHOLE_RUN)
    splits: SplitConfig = Field(default_factory=SplitConfig, json_schema_extra=WHOLE_RUN,
                                description="group-disjoint train/validation/test ratios and grouping of the "
                                "mined benchmark (mosear/mine/splits.py)")
    train_mix: TrainMixConfig = Field(default_factory=TrainMixConfig, json_schema_extra=WHOLE_RUN,
                                      description="which rows train (mosear/mine/assemble.py train_mix)")
    ambiguous_weight: float = Field(0.0, ge=0, json_schema_extra=WHOLE_RUN, description="training-mix weight of ambiguous rows")
    allow_partial: bool = Field(False, json_schema_extra=SCHEDULING, description="a shard that fails to mine "
                                "leaves the stage failed (exit 1) unless this is true: then the outputs are built "
                                "from the other shards and commit.json / summary.json name the missing ones")
    progress: bool = Field(True, json_schema_extra=SCHEDULING)

    @model_validator(mode="before")
    @classmethod
    def _splice_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "splice" in data:
            raise ValueError("splice: counterfactual face/voice clips are a shard-stage source now: declare them in "
                             "the corpus (`adapter: splice`, docs/shard.md \"Counterfactual splices\") and mine the "
                             "shard folder; mining only mines")
        return data

    def stage_hash(self) -> str:
        """Hash of what decides one shard's evidence (fields marked WHOLE_RUN only change later steps),
        with every stage's ``name@version`` (:meth:`stage_versions`)."""
        return self.output_hash(per_unit=True)

    def stage_versions(self) -> list[str]:
        """``name@version`` of every stage of :attr:`stages`, in order. Resolves the stage classes (with
        :attr:`py_modules` on the import path) and builds them (no ``setup``: no model is loaded);
        a name or parameter that does not resolve is a :class:`~mosear.config.ConfigError`."""
        from mosear.mine.stage_pipeline import StagePipeline, add_import_paths
        from mosear.mine.stage import StageContractError

        add_import_paths(self.py_modules)
        try:
            return StagePipeline.from_spec(self.stages).versions()
        except (KeyError, TypeError, ValueError, ImportError, AttributeError, StageContractError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise ConfigError(f"stages: {msg}") from exc

    def derived_output_fields(self) -> dict[str, Any]:
        """The stages' code versions: editing a stage's ``version`` mines every shard again."""
        return {"stage_versions": self.stage_versions()}
