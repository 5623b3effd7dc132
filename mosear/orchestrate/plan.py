"""How the pipeline wires the four stages together: one output folder per stage under a workdir.

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
reports the three methods of :data:`METHOD_ROWS` (LoRA, MoSE, MoSE+AR) first.

Only paths are set here; every other value is the stage's own default, a ``stage.key=value``
override, or a section of the pipeline YAML. :data:`SAMPLE_DEFAULTS` are the small values that
make ``mosear run`` on the built-in sample corpus finish in minutes on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosear.config import _deep_merge
from mosear.orchestrate.runner import Mode, StageRequest

__all__ = ["STAGE_ORDER", "SAMPLE_DEFAULTS", "METHODS", "METHOD_ROWS", "stage_outputs", "pipeline_requests"]

STAGE_ORDER: tuple[str, ...] = ("shard", "mine", "train", "eval")

# The train stage runs once per method: its model overrides, on top of the train section.
METHODS: dict[str, dict[str, Any]] = {
    "lora": {"model": {"adapter": "lora"}},   # the baseline: plain peft LoRA
    "mose": {"model": {"adapter": "mose"}},   # modality-specific experts
}
# The report's and the terminal's first table: method name -> "checkpoint/setting" of the eval units.
METHOD_ROWS: dict[str, str] = {"LoRA": "lora/ar_off", "MoSE": "mose/ar_off", "MoSE+AR": "mose/ar_calibrated"}

# The tiny preset's towers and LLM are random and frozen: from raw frames and waveforms nothing is learnt
# in minutes (issue 15). The sample run therefore feeds the mined per-clip features (fer expression scores +
# face statistics, eGeMAPS functionals) through trainable projectors, as Emotion-LLaMA feeds its encoders'
# features, and trains on the label alone. lr / steps / tokens were chosen on the validation split
# (docs/orchestration.md, "Sample run settings"); the test split was not looked at for them.
# The tiny LM's output head is random and frozen (std 0.02 over 64 dims): its logits cannot move more than
# about +-1.3 whatever the adapters do, so the loss floors at ~5.0 nats (measured: 5.89 -> 5.04) and the
# label scores barely separate. Adapting lm_head too (LoRA / MoSE on it, as on q_proj and v_proj) lifts
# the floor (0.5 nats after 150 steps); both methods get the same target modules.
_SAMPLE_MODEL = {"preset": "tiny", "inputs": "features", "visual_tokens": 2, "audio_tokens": 2,
                 "lora": {"target_modules": ["q_proj", "v_proj", "lm_head"]}}

# Small, quick values for the sample corpus; a pipeline YAML or key=value overrides replace them.
SAMPLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "shard": {"num_frames": 8, "height": 112, "width": 112},
    # counterfactual face/voice splices of the sample's RAVDESS clips give the benchmark its conflicts
    "mine": {
        "workers": 2,
        # every face/voice pair of the sample (406): with 24 the test split held 2/2/2 items per subset
        "splice": {"enabled": True, "faces": "{corpus_dir}/ravdess", "voices": "{corpus_dir}/ravdess_audio",
                   "max_pairs": None},
    },
    "train": {"model": _SAMPLE_MODEL, "target": "template", "target_template": "{label}", "max_steps": 150,
              "batch_size": 4, "lr": 2e-3, "warmup_steps": 5, "min_lr_ratio": 0.1, "checkpoint_every": 150,
              "report_every": 50, "log_every": 10},
    "eval": {"model": _SAMPLE_MODEL, "batch_size": 8,
             "settings": [{"name": "ar_off"}, {"name": "ar_calibrated", "ar": True, "calibrate": True},
                          {"name": "no_audio", "drop": "audio"}, {"name": "no_video", "drop": "video"}]},
}


def stage_outputs(workdir: str | Path) -> dict[str, Path]:
    """Where each stage writes, and the checkpoint / report inside them."""
    w = Path(workdir)
    return {
        "shard": w / "shards",
        "mine": w / "mined",
        "train": w / "train",
        "eval": w / "reports",
        "checkpoint": w / "train" / "mose" / "adapter",
        **{f"checkpoint:{m}": w / "train" / m / "adapter" for m in METHODS},
        "report": w / "reports" / "report.html",
        "cache": w / ".mosear-cache",
    }


def _wiring(stage: str, corpus: str, out: dict[str, Path]) -> dict[str, Any]:
    if stage == "shard":
        return {"corpus": corpus, "output": str(out["shard"])}
    if stage == "mine":
        return {"shards": str(out["shard"]), "output": str(out["mine"])}
    if stage == "train":  # the train split only: mine's train_mix holds train rows
        return {"shards": [str(out["shard"])], "mix": str(out["mine"] / "train_mix.parquet"),
                "features": str(out["mine"] / "features.parquet")}
    if stage == "eval":  # the test split; ar_calibrated calibrates on the validation split
        return {
            "checkpoints": [f"{m}={out[f'checkpoint:{m}']}" for m in METHODS],
            "benchmarks": [{"name": "mined", "format": "mined", "path": str(out["mine"]), "shards": str(out["shard"]),
                            "split": "test"}],
            "methods": dict(METHOD_ROWS),
            "output": str(out["eval"]),
        }
    raise KeyError(stage)


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
    defaults = SAMPLE_DEFAULTS if defaults is None else defaults
    overrides = overrides or {}
    reqs = []
    corpus_dir = str(Path(corpus_abs).parent) if Path(corpus_abs).is_file() else corpus_abs
    for stage in (s for s in STAGE_ORDER if s in stages):
        values = _deep_merge(_fill(defaults.get(stage, {}), corpus_dir), overrides.get(stage, {}))
        values = _deep_merge(values, _wiring(stage, corpus_abs, out))
        runs = [(None, values)]
        if stage == "train":  # one run per method, each into train/<method>/
            runs = [(f"train:{m}", _deep_merge(_deep_merge(values, extra), {"output": str(out["train"] / m)}))
                    for m, extra in METHODS.items()]
        for label, vals in runs:
            reqs.append(StageRequest(stage=stage, label=label, overrides=vals, mode=mode, ray_address=ray_address,
                                     cache_dir=str(out["cache"])))
    return reqs
