"""How the pipeline wires the four stages together: one output folder per stage under a workdir.

```
{workdir}/shards/      mosear shard   corpus -> WebDataset shards
{workdir}/mined/       mosear mine    shards -> conflicts.parquet, CA-MER-style subsets, train_mix
{workdir}/train/       mosear train   shards + train_mix -> adapter/ (the checkpoint)
{workdir}/reports/     mosear eval    adapter x mined benchmark -> metrics, report.html
{workdir}/.mosear-cache/  cache records of finished stages and the input-hash memo
```

Only paths are set here; every other value is the stage's own default, a ``stage.key=value``
override, or a section of the pipeline YAML. :data:`SAMPLE_DEFAULTS` are the small values that
make ``mosear run`` on the built-in sample corpus finish in minutes on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosear.config import _deep_merge
from mosear.orchestrate.runner import Mode, StageRequest

__all__ = ["STAGE_ORDER", "SAMPLE_DEFAULTS", "stage_outputs", "pipeline_requests"]

STAGE_ORDER: tuple[str, ...] = ("shard", "mine", "train", "eval")

# Small, quick values for the sample corpus; a pipeline YAML or key=value overrides replace them.
SAMPLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "shard": {"num_frames": 8, "height": 112, "width": 112},
    # counterfactual face/voice splices of the sample's RAVDESS clips give the benchmark its conflicts
    "mine": {
        "workers": 2,
        "splice": {"enabled": True, "faces": "{corpus_dir}/ravdess", "voices": "{corpus_dir}/ravdess_audio", "max_pairs": 24},
    },
    "train": {"model": {"preset": "tiny"}, "max_steps": 6, "checkpoint_every": 3, "warmup_steps": 1},
    "eval": {"model": {"preset": "tiny"}},
}


def stage_outputs(workdir: str | Path) -> dict[str, Path]:
    """Where each stage writes, and the checkpoint / report inside them."""
    w = Path(workdir)
    return {
        "shard": w / "shards",
        "mine": w / "mined",
        "train": w / "train",
        "eval": w / "reports",
        "checkpoint": w / "train" / "adapter",
        "report": w / "reports" / "report.html",
        "cache": w / ".mosear-cache",
    }


def _wiring(stage: str, corpus: str, out: dict[str, Path]) -> dict[str, Any]:
    if stage == "shard":
        return {"corpus": corpus, "output": str(out["shard"])}
    if stage == "mine":
        return {"shards": str(out["shard"]), "output": str(out["mine"])}
    if stage == "train":
        return {"shards": [str(out["shard"])], "mix": str(out["mine"] / "train_mix.parquet"), "output": str(out["train"])}
    if stage == "eval":
        return {
            "checkpoints": [str(out["checkpoint"])],
            "benchmarks": [{"name": "mined", "format": "mined", "path": str(out["mine"]), "shards": str(out["shard"])}],
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
        reqs.append(
            StageRequest(
                stage=stage, overrides=values, mode=mode, ray_address=ray_address, cache_dir=str(out["cache"]),
            )
        )
    return reqs
