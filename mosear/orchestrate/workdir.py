"""A pipeline run's workdir: one output folder per stage (each spec's ``folder``), wired by the specs.

```
{workdir}/shards/        mosear shard   corpus -> WebDataset shards
{workdir}/mined/         mosear mine    shards -> conflicts.parquet (subset + split), {split}/{subset}.json,
                                        train_mix (train rows), features.parquet
{workdir}/train/<method>/ mosear train  train split -> adapter/ (one checkpoint per method: lora, mose)
{workdir}/reports/       mosear eval    checkpoints x mined test split (AR calibrated on validation)
                                        -> metrics, report.html
{workdir}/.mosear-cache/ cache records of finished stages and the input-hash memo
```

The protocol (DESIGN.md §5): training reads the train split only (``train_mix.parquet`` holds train rows),
AR is calibrated on the validation split (the ``ar_calibrated`` setting), and everything is reported on
the test split; ``mosear eval`` refuses a checkpoint whose recorded training keys meet the test split.
The train stage runs once per entry of :data:`METHODS` (the LoRA baseline and MoSE); the eval stage
reports the four methods of :data:`METHOD_ROWS` (LoRA, LoRA+AR, MoSE, MoSE+AR; AR calibrated on validation
for both) first.

Only paths are set here, by each stage's own ``wire`` (its ``spec.py``); every other value is the stage's own default, a ``stage.key=value``
override, or a section of the pipeline YAML. :data:`SAMPLE_DEFAULTS` are the small values that
make ``mosear run`` on the built-in sample corpus finish in minutes on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosear.config import _deep_merge
from mosear.orchestrate.dispatch import Mode, StageRequest
from mosear.orchestrate.registry import STAGE_ORDER, STAGES
from mosear.orchestrate.spec import PipelinePaths

__all__ = ["STAGE_ORDER", "SAMPLE_DEFAULTS", "METHODS", "METHOD_ROWS", "stage_outputs", "pipeline_paths", "pipeline_requests"]

# The train stage runs once per method: its model overrides, on top of the train section.
METHODS: dict[str, dict[str, Any]] = {
    "lora": {"model": {"adapter": "lora"}},   # the baseline: plain peft LoRA
    "mose": {"model": {"adapter": "mose"}},   # modality-specific experts
}
# The report's and the terminal's first table: method name -> "checkpoint/setting" of the eval units.
# Four methods: AR is calibrated on validation for both trained checkpoints alike, so MoSE+AR is compared with
# LoRA+AR (MoSE's own contribution) and not only with LoRA (which would credit MoSE with AR's effect).
METHOD_ROWS: dict[str, str] = {"LoRA": "lora/ar_off", "LoRA+AR": "lora/ar_calibrated", "MoSE": "mose/ar_off",
                               "MoSE+AR": "mose/ar_calibrated"}

# The tiny preset's towers and LLM are random and frozen: from raw frames and waveforms nothing is learnt
# in minutes (issue 15). The sample run therefore feeds the mined per-clip features (fer expression scores +
# face statistics, eGeMAPS functionals) through trainable projectors, as Emotion-LLaMA feeds its encoders'
# features, and trains on the label alone. lr / steps / tokens were chosen on the validation split
# (docs/orchestration.md, "Sample run settings"); the test split was not looked at for them.
# The tiny LM's output head is random and frozen (std 0.02 over 64 dims): its logits cannot move more than
# about +-1.3 whatever the adapters do, so the loss floors at ~5.0 nats (measured: 5.89 -> 5.04) and the
# label scores barely separate. Adapting lm_head too (LoRA / MoSE on it, as on q_proj and v_proj) lifts
# the floor (0.5 nats after 150 steps); both methods get the same target modules.
# The audio features are eGeMAPS (88) and the Whisper tiny.en encoder's mean + std (768): the evidence the
# sample mines (below), 88 + 768 = 856 wide.
_SAMPLE_MODEL = {"preset": "tiny", "inputs": "features", "visual_tokens": 2, "audio_tokens": 2,
                 "audio_feature_dim": 856, "lora": {"target_modules": ["q_proj", "v_proj", "lm_head"]}}

# The sample's evidence models, chosen person-disjointly on its train and validation people only
# (benchmarks/evidence_models.py --frames 8 --size 112, docs/mining.md "Evidence models"): facex for the
# face (leave-one-actor-out 0.47 against fer's 0.33), eGeMAPS + Whisper tiny.en for the voice (0.55
# against eGeMAPS' 0.34). Its test people are pinned (ravdess_01, ravdess_05) so that choice never saw them.
_SAMPLE_MINE = {
    "workers": 2,
    "stages": ["require_label", "signal_quality", "audio_egemaps", "audio_whisper", "visual_facex", "text_lexicon"],
    "splits": {"assign": {"test": ["ravdess_01", "ravdess_05"]}},
    # Every natural train clip has a truth (its acted label) whether or not the weak cue classifiers placed
    # it in a subset: all of them train. The splices enter under a named rule, the face's emotion (a
    # counterfactual augmentation that teaches to follow the face; the report states it): a splice has no
    # true emotion, so the preference it yields on the unseen test people says whether that transfers.
    "ambiguous_weight": 1.0,
    "train_mix": {"splice_target": "face"},
}

# Small, quick values for the sample corpus; a pipeline YAML or key=value overrides replace them.
SAMPLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "shard": {"num_frames": 8, "height": 112, "width": 112},
    # the benchmark's conflicts come from the counterfactual face/voice splices the sample corpus declares
    # (datasets/samples/corpus_splices.yaml, a shard source like any other)
    "mine": _SAMPLE_MINE,
    "train": {"model": _SAMPLE_MODEL, "target": "template", "target_template": "{label}", "max_steps": 150,
              "batch_size": 4, "lr": 2e-3, "warmup_steps": 5, "min_lr_ratio": 0.1, "checkpoint_every": 150,
              "report_every": 50, "log_every": 10},
    # calibration searches AR's default variant and the token share docs/model.md recommends (bias lab)
    "eval": {"model": _SAMPLE_MODEL, "batch_size": 8,
             "settings": [{"name": "ar_off"}, {"name": "ar_calibrated", "ar": True, "calibrate": True},
                          {"name": "no_audio", "drop": "audio"}, {"name": "no_video", "drop": "video"}],
             "calibration": {"options": [{"share": "mass", "direction": "audio"},
                                         {"share": "token", "direction": "audio"}]}},
}


def stage_outputs(workdir: str | Path) -> dict[str, Path]:
    """Where each stage writes (its spec's ``folder``), and the checkpoints / report inside them."""
    w = Path(workdir)
    train, reports = w / STAGES["train"].folder, w / STAGES["eval"].folder
    return {
        **{name: w / spec.folder for name, spec in STAGES.items()},
        "checkpoint": train / "mose" / "adapter",
        **{f"checkpoint:{m}": train / m / "adapter" for m in METHODS},
        "report": reports / "report.html",
        "cache": w / ".mosear-cache",
    }


def pipeline_paths(corpus: str, workdir: str | Path) -> PipelinePaths:
    """What every stage's ``wire`` sees: the corpus, the stages' output folders, the checkpoints."""
    out = stage_outputs(workdir)
    return PipelinePaths(corpus=corpus, outputs={s: out[s] for s in STAGES},
                         checkpoints={m: out[f"checkpoint:{m}"] for m in METHODS})


def _runs(stage: str, values: dict[str, Any], out: dict[str, Path]) -> list[tuple[str | None, dict[str, Any]]]:
    """The pipeline's own choices on top of a stage's wiring: (label, values) per run of the stage."""
    if stage == "train":  # one run per method, each into train/<method>/
        return [(f"train:{m}", _deep_merge(_deep_merge(values, extra), {"output": str(out["train"] / m)}))
                for m, extra in METHODS.items()]
    if stage == "eval":  # the report's first table: the methods' rows
        return [(None, _deep_merge(values, {"methods": dict(METHOD_ROWS)}))]
    return [(None, values)]


def _fill(values: Any, corpus_dir: str) -> Any:
    """Replace ``{corpus_dir}`` in default values (sample defaults name files beside the corpus)."""
    if isinstance(values, dict):
        return {k: _fill(v, corpus_dir) for k, v in values.items()}
    if isinstance(values, str):
        return values.replace("{corpus_dir}", corpus_dir)
    return values


def pipeline_requests(
    corpus: str,
    workdir: str,
    stages: list[str] | tuple[str, ...] = STAGE_ORDER,
    mode: Mode = "embedded",
    ray_address: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    defaults: dict[str, dict[str, Any]] | None = None,
) -> list[StageRequest]:
    """One :class:`StageRequest` per stage, in pipeline order; paths absolute (resumable from anywhere)."""
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGE_ORDER)}")
    work = Path(workdir).resolve()
    corpus_abs = str(Path(corpus).resolve()) if "://" not in corpus else corpus
    out = stage_outputs(work)
    paths = pipeline_paths(corpus_abs, work)
    defaults = SAMPLE_DEFAULTS if defaults is None else defaults
    overrides = overrides or {}
    reqs = []
    corpus_dir = str(Path(corpus_abs).parent) if Path(corpus_abs).is_file() else corpus_abs
    for stage in (s for s in STAGE_ORDER if s in stages):
        values = _deep_merge(_fill(defaults.get(stage, {}), corpus_dir), overrides.get(stage, {}))
        values = _deep_merge(values, STAGES[stage].wire(paths))
        for label, vals in _runs(stage, values, out):
            reqs.append(StageRequest(stage=stage, label=label, overrides=vals, mode=mode, ray_address=ray_address,
                                     cache_dir=str(out["cache"])))
    return reqs
