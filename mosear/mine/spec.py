"""The mine stage as the pipeline sees it (:class:`~mosear.orchestrate.spec.StageSpec`): shards -> conflicts, subsets, splits, mix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosear.orchestrate.spec import PipelinePaths, StageSpec, paths_of


def _inputs(cfg: Any) -> list[Path]:
    """The shard folder (natural and spliced clips alike), the ``py_modules`` of third-party stages and
    the model files and folders stage parameters name (``hf_classifier``'s ``model_path``: by content)."""
    from mosear.identity import model_paths

    return paths_of(cfg, "shards", "py_modules") + model_paths(getattr(cfg, "stages", []))


def _wire(paths: PipelinePaths) -> dict[str, Any]:
    return {"shards": str(paths.output("shard")), "output": str(paths.output("mine"))}


SPEC = StageSpec(
    name="mine",
    help="mine audio/visual emotion conflicts and build CA-MER-style benchmarks",
    config="mosear.mine.config:MineConfig",
    run="mosear.mine.run:run_mine",
    cli="mosear.mine.cli",
    folder="mined",
    inputs=_inputs,
    wire=_wire,
    path_fields=("shards", "output"),
    artifacts={"conflicts": "conflicts.parquet", "training mix": "train_mix.parquet"},
    rejects={"dropped": "dropped.parquet"},
)
