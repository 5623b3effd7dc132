"""The Prefect flows of mosear, importable from the installed package.

``mosear run`` imports :func:`pipeline` from here (it never executes a file from the working folder);
``flows/*.py`` are the thin deployment entrypoints ``flows/prefect.yaml`` names, each importing its
flow from this module. Flows are thin: they build :class:`~mosear.orchestrate.runner.StageRequest`s,
run each as a cached task (:mod:`mosear.orchestrate.prefect_tasks`) and record artifacts.

- :func:`pipeline`: shard -> mine -> train -> eval, each a cached task; a rerun (after a crash, a kill,
  or a nightly schedule with nothing new) skips every stage whose identity (config + input content,
  :mod:`mosear.identity`) has not changed. The wiring of stage outputs to inputs is
  :mod:`mosear.orchestrate.plan`.
- :func:`shard`, :func:`mine`, :func:`train`, :func:`evaluate`: one stage each.

A stage that fails (bad input, failed shards or units, a refused resume) fails its flow run with the
stage's message; a partial stage (``allow_partial``) completes, and the summary artifact says what is
missing.
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
from mosear.orchestrate.runner import StageOutcome, StageRequest, request_name, validate_requests

__all__ = ["pipeline", "shard", "mine", "train", "evaluate"]


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
