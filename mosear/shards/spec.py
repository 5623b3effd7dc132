"""The shard stage as the pipeline sees it (:class:`~mosear.orchestrate.spec.StageSpec`): corpus -> WebDataset shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosear.orchestrate.spec import PipelinePaths, StageSpec, local_path


def _inputs(cfg: Any) -> list[Path]:
    """The corpus file and every source's root folder and manifest (as the config resolved them)."""
    paths = [p for p in [local_path(getattr(cfg, "corpus", None))] if p is not None]
    for src in getattr(cfg, "sources", []):
        paths.append(src.root_path())
        if getattr(src, "manifest", None) is not None:
            paths.append(src.manifest_path())
    return paths


def _wire(paths: PipelinePaths) -> dict[str, Any]:
    return {"corpus": paths.corpus, "output": str(paths.output("shard"))}


SPEC = StageSpec(
    name="shard",
    help="decode a video corpus into WebDataset shards (Ray Data)",
    config="mosear.shards.config:ShardConfig",
    run="mosear.shards.run:run_shard",
    cli="mosear.shards.cli",
    folder="shards",
    inputs=_inputs,
    wire=_wire,
    # inline sources resolve root/manifest against base_dir; "!" pins a missing one to the cwd
    path_fields=("corpus", "output", "sources[].base_dir!"),
    artifacts={"run summary": "run.json", "quarantine": "quarantine.parquet"},
)
