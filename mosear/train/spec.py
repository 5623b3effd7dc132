"""The train stage as the pipeline sees it (:class:`~mosear.orchestrate.spec.StageSpec`): shards + mix -> adapter checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosear.orchestrate.spec import PipelinePaths, StageSpec, local_path, paths_of


def _inputs(cfg: Any) -> list[Path]:
    """The shard folders (with the spliced shards a mined mix draws on), the mix, the features and the
    base model's local folders (``model.model_path``, ``llm_path``, ...: by content, not path)."""
    from mosear.identity import model_paths
    from mosear.train.preflight import shard_folders

    return ([p for f in shard_folders(cfg) if (p := local_path(f)) is not None] + paths_of(cfg, "mix", "features")
            + model_paths(getattr(cfg, "model", None)))


def _wire(paths: PipelinePaths) -> dict[str, Any]:
    """The train split only: mine's ``train_mix.parquet`` holds train rows. The pipeline runs the stage
    once per method, each into ``{train folder}/<method>`` (:data:`mosear.orchestrate.workdir.METHODS`)."""
    mined = paths.output("mine")
    return {"shards": [str(paths.output("shard"))], "mix": str(mined / "train_mix.parquet"),
            "features": str(mined / "features.parquet")}


SPEC = StageSpec(
    name="train",
    help="fine-tune MoSE experts (or the LoRA baseline) with Ray Train",
    config="mosear.train.config:TrainConfig",
    run="mosear.train.recipe:run_train",
    cli="mosear.train.cli",
    folder="train",
    inputs=_inputs,
    wire=_wire,
    path_fields=("shards", "mix", "features", "output", "storage_path"),
    artifacts={"adapter": "adapter", "metrics": "metrics.jsonl"},
)
