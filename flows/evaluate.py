"""Prefect flow: ``mosear eval`` (checkpoints x benchmarks x settings -> metrics, HTML report)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from mosear.orchestrate.prefect_tasks import run_stage_task, stop_jobs_on_cancel
from mosear.orchestrate.runner import StageOutcome, StageRequest


@flow(name="mosear-eval", on_cancellation=[stop_jobs_on_cancel], on_crashed=[stop_jobs_on_cancel])
def evaluate(
    checkpoints: list[str] = ["runs/samples/train/adapter"],  # noqa: B006
    mined: str = "runs/samples/mined",
    shards: str | None = "runs/samples/shards",
    output: str = "runs/samples/reports",
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    mode: Literal["embedded", "cluster"] = "embedded",
    ray_address: str | None = None,
) -> StageOutcome:
    """Evaluate ``checkpoints`` on the mined benchmark in ``mined``; report under ``output``."""
    benchmark = {"name": "mined", "format": "mined", "path": mined, "shards": shards}
    request = StageRequest(
        stage="eval", config=config,
        overrides={"benchmarks": [benchmark], **(overrides or {}), "checkpoints": list(checkpoints), "output": output},
        mode=mode, ray_address=ray_address,
    )
    return run_stage_task(request)[0]


if __name__ == "__main__":
    evaluate()
