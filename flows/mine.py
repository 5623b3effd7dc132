"""Prefect flow: ``mosear mine`` (shards -> conflicts.parquet, CA-MER-style subsets, training mix)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from mosear.orchestrate.prefect_tasks import run_stage_task, stop_jobs_on_cancel
from mosear.orchestrate.runner import StageOutcome, StageRequest


@flow(name="mosear-mine", on_cancellation=[stop_jobs_on_cancel], on_crashed=[stop_jobs_on_cancel])
def mine(
    shards: str = "runs/samples/shards",
    output: str = "runs/samples/mined",
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    mode: Literal["embedded", "cluster"] = "embedded",
    ray_address: str | None = None,
) -> StageOutcome:
    """Mine the shards under ``shards`` into ``output``; ``overrides`` set MineConfig fields."""
    request = StageRequest(
        stage="mine", config=config, overrides={**(overrides or {}), "shards": shards, "output": output},
        mode=mode, ray_address=ray_address,
    )
    return run_stage_task(request)[0]


if __name__ == "__main__":
    mine()
