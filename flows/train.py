"""Prefect flow: ``mosear train`` (shards + mined training mix -> adapter checkpoint)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from mosear.orchestrate.prefect_tasks import run_stage_task, stop_jobs_on_cancel
from mosear.orchestrate.runner import StageOutcome, StageRequest


@flow(name="mosear-train", on_cancellation=[stop_jobs_on_cancel], on_crashed=[stop_jobs_on_cancel])
def train(
    shards: list[str] = ["runs/samples/shards"],  # noqa: B006 (Prefect copies parameter defaults)
    mix: str | None = "runs/samples/mined/train_mix.parquet",
    output: str = "runs/samples/train",
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    mode: Literal["embedded", "cluster"] = "embedded",
    ray_address: str | None = None,
) -> StageOutcome:
    """Train on ``shards`` (sampled by ``mix``) into ``output``; ``overrides`` set TrainConfig fields."""
    request = StageRequest(
        stage="train", config=config,
        overrides={**(overrides or {}), "shards": list(shards), "mix": mix, "output": output},
        mode=mode, ray_address=ray_address,
    )
    return run_stage_task(request)[0]


if __name__ == "__main__":
    train()
