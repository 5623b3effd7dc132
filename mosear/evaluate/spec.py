"""The eval stage as the pipeline sees it (:class:`~mosear.orchestrate.spec.StageSpec`): checkpoints x benchmarks x settings -> report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosear.orchestrate.spec import PipelinePaths, StageSpec, local_path


def _inputs(cfg: Any) -> list[Path]:
    """The checkpoint folders, the base model's local folders (``model:``; by content) and every
    benchmark's files, shards and features."""
    from mosear.identity import model_paths

    # entries may be "name=path" (mosear.evaluate.units.checkpoint_names); "base" is no folder
    paths = [p for c in getattr(cfg, "checkpoints", []) if c != "base" and (p := local_path(c.split("=", 1)[-1]))]
    for b in getattr(cfg, "benchmarks", []):
        shards = b.shards if isinstance(b.shards, list) else [b.shards]  # one folder or a list
        paths += [p for p in (local_path(b.path), *map(local_path, shards), local_path(b.features)) if p is not None]
    return paths + [p for p in model_paths(getattr(cfg, "model", None)) if p not in paths]


def _wire(paths: PipelinePaths) -> dict[str, Any]:
    """Every trained checkpoint on the mined test split (``ar_calibrated`` calibrates on validation)."""
    return {
        "checkpoints": [f"{m}={p}" for m, p in paths.checkpoints.items()],
        "benchmarks": [{"name": "mined", "format": "mined", "path": str(paths.output("mine")),
                        "shards": str(paths.output("shard")), "split": "test"}],
        "output": str(paths.output("eval")),
    }


SPEC = StageSpec(
    name="eval",
    help="evaluate checkpoints x benchmarks x inference settings",
    config="mosear.evaluate.config:EvalConfig",
    run="mosear.evaluate.fanout:run_eval",
    cli="mosear.evaluate.cli",
    folder="reports",
    inputs=_inputs,
    wire=_wire,
    path_fields=("checkpoints", "output", "benchmarks[].path", "benchmarks[].shards", "benchmarks[].features"),
    artifacts={"HTML report": "report.html", "metrics": "metrics.parquet"},
)
