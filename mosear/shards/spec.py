"""The shard stage as the pipeline sees it (:class:`~mosear.orchestrate.spec.StageSpec`): corpus -> WebDataset shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosear.orchestrate.spec import PipelinePaths, StageSpec, local_path


def _inputs(cfg: Any) -> list[Path]:
    """The corpus file and what every source reads: its root folder and manifest, a splice source's
    faces and voices folders (the adapter's ``input_paths``, as the config resolved them)."""
    from mosear.adapters import get_adapter

    paths = [p for p in [local_path(getattr(cfg, "corpus", None))] if p is not None]
    for src in getattr(cfg, "sources", []):
        paths += get_adapter(src.adapter).input_paths(src.root_path(), src)
    return paths


def _wire(paths: PipelinePaths) -> dict[str, Any]:
    return {"corpus": paths.corpus, "output": str(paths.output("shard"))}


SPEC = StageSpec(
    name="shard",
    help="decode a video corpus into WebDataset shards (Ray tasks)",
    config="mosear.shards.config:ShardConfig",
    run="mosear.shards.run:run_shard",
    cli="mosear.shards.cli",
    folder="shards",
    inputs=_inputs,
    wire=_wire,
    # inline sources resolve root/manifest against base_dir; "!" pins a missing one to the cwd
    path_fields=("corpus", "output", "sources[].base_dir!"),
    artifacts={"run summary": "run.json", "quarantine": "quarantine.parquet"},
    rejects={"quarantined": "quarantine.parquet"},
)
