"""Prefect flow: ``mosear shard`` (corpus -> WebDataset shards). Thin: parameters in, stage task, artifacts.

Run it: ``python flows/shard.py`` or a deployment from ``flows/prefect.yaml``.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from mosear.orchestrate.prefect_tasks import run_stage_task, stop_jobs_on_cancel
from mosear.orchestrate.runner import StageOutcome, StageRequest


@flow(name="mosear-shard", on_cancellation=[stop_jobs_on_cancel], on_crashed=[stop_jobs_on_cancel])
def shard(
    corpus: str = "datasets/samples/corpus.yaml",
    output: str = "runs/samples/shards",
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    mode: Literal["embedded", "cluster"] = "embedded",
    ray_address: str | None = None,
) -> StageOutcome:
    """Decode ``corpus`` into shards under ``output``; ``overrides`` set ShardConfig fields."""
    request = StageRequest(
        stage="shard", config=config, overrides={**(overrides or {}), "corpus": corpus, "output": output},
        mode=mode, ray_address=ray_address,
    )
    return run_stage_task(request)[0]


if __name__ == "__main__":
    shard()
