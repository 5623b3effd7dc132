"""Prefect flow: the whole pipeline, shard -> mine -> train -> eval, each stage a cached task.

A rerun (after a crash, a kill, or a nightly schedule with nothing new) skips every stage whose
inputs and config have not changed: see ``mosear/orchestrate/prefect_tasks.py``. The wiring of
stage outputs to stage inputs is ``mosear.orchestrate.plan``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger

from mosear.orchestrate.plan import STAGE_ORDER, pipeline_requests, stage_outputs
from mosear.orchestrate.prefect_tasks import run_stage_task, stop_jobs_on_cancel, summary_markdown
from mosear.orchestrate.runner import StageOutcome, request_name, validate_requests


@flow(name="mosear-pipeline", on_cancellation=[stop_jobs_on_cancel], on_crashed=[stop_jobs_on_cancel])
def pipeline(
    corpus: str = "datasets/samples/corpus.yaml",
    workdir: str = "runs/samples",
    stages: list[str] = list(STAGE_ORDER),  # noqa: B006
    overrides: dict[str, dict[str, Any]] | None = None,
    mode: Literal["embedded", "cluster"] = "embedded",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Run ``stages`` (in pipeline order) on ``corpus``; outputs under ``workdir``.

    ``overrides`` maps a stage name to config fields for it, e.g. ``{"train": {"max_steps": 50}}``.
    Returns ``{"outcomes": {name: StageOutcome}, "cached": {name: bool}, "outputs": {...}, "flow_start": t}``
    (``name``: the stage, or ``train:<method>`` for each method trained).
    """
    flow_start = time.time()
    logger = get_run_logger()
    requests = pipeline_requests(corpus, workdir, stages, mode=mode, ray_address=ray_address, overrides=overrides)
    validate_requests(requests)  # a typo in the eval section fails now, not after an hour of shard + train
    outcomes: dict[str, StageOutcome] = {}
    cached: dict[str, bool] = {}
    for i, request in enumerate(requests, 1):
        name = request_name(request)  # train runs once per method (train:lora, train:mose)
        logger.info("[%d/%d] %s", i, len(requests), name)
        outcomes[name], cached[name] = run_stage_task(request)
    outputs = {k: str(v) for k, v in stage_outputs(Path(workdir).resolve()).items()}
    create_markdown_artifact(
        markdown="### mosear pipeline\n\n" + summary_markdown(list(outcomes.values()), cached),
        key="mosear-pipeline-summary", description="stages, seconds, outputs",
    )
    if "eval" in outcomes:
        report = Path(outputs["report"])
        if report.is_file():
            create_link_artifact(link=report.resolve().as_uri(), link_text="HTML report", key="mosear-pipeline-report")
    return {"outcomes": outcomes, "cached": cached, "outputs": outputs, "flow_start": flow_start}


if __name__ == "__main__":
    pipeline()
