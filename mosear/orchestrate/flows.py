"""The Prefect flows of mosear, importable from the installed package.

``mosear run`` imports :func:`pipeline` from here (it never executes a file from the working folder);
``flows/pipeline.py`` and ``flows/stages.py`` are the thin deployment entrypoints ``flows/prefect.yaml``
names, importing their flows from this module. Flows are thin: they build
requests (:class:`~mosear.orchestrate.dispatch.StageRequest`), validate them once, run each as a cached task
(:mod:`mosear.orchestrate.prefect_tasks`) and record artifacts.

- :func:`pipeline`: shard -> mine -> train -> eval, each a cached task; a rerun (after a crash, a kill,
  or a nightly schedule with nothing new) skips every stage whose identity (config + input content,
  :mod:`mosear.identity`) has not changed. The wiring of stage outputs to inputs is each stage's
  ``spec.wire``, laid out under a workdir by :mod:`mosear.orchestrate.workdir`.
- :data:`STAGE_FLOWS`: one flow per stage of the registry (``mosear-shard``, ``mosear-mine``,
  ``mosear-train``, ``mosear-eval``), all made by :func:`stage_flow`; each takes the stage's config
  (a YAML file or the fields inline) plus ``overrides`` on top, as ``mosear <stage>`` does.

A stage that fails (bad input, failed shards or units, a refused resume) fails its flow run with the
stage's message; a partial stage (``allow_partial``) completes, and the summary artifact says what is
missing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from prefect import Flow, flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger

from mosear.config import _deep_merge
from mosear.orchestrate.dispatch import StageOutcome, StageRequest, prepare, prepare_all
from mosear.orchestrate.prefect_tasks import run_stage_task, stop_jobs_on_cancel, summary_markdown
from mosear.orchestrate.registry import STAGE_ORDER, STAGES
from mosear.orchestrate.spec import StageSpec
from mosear.orchestrate.workdir import pipeline_requests, stage_outputs

__all__ = ["pipeline", "stage_flow", "STAGE_FLOWS"]

_HOOKS = dict(on_cancellation=[stop_jobs_on_cancel], on_crashed=[stop_jobs_on_cancel])


@flow(name="mosear-pipeline", **_HOOKS)
def pipeline(
    corpus: str = "datasets/samples/corpus_splices.yaml",
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
    prepared = prepare_all(requests)  # a typo in the eval section fails now, not after an hour of shard + train
    outcomes: dict[str, StageOutcome] = {}
    cached: dict[str, bool] = {}
    for i, stage in enumerate(prepared, 1):
        logger.info("[%d/%d] %s", i, len(prepared), stage.name)  # train runs once per method (train:lora, train:mose)
        outcomes[stage.name], cached[stage.name] = run_stage_task(stage)
    outputs = {k: str(v) for k, v in stage_outputs(Path(workdir).resolve()).items()}
    create_markdown_artifact(
        markdown="### mosear pipeline\n\n" + summary_markdown(outcomes, cached),
        key="mosear-pipeline-summary", description="stages, seconds, outputs",
    )
    if "eval" in outcomes:
        report = Path(outputs["report"])
        if report.is_file():
            create_link_artifact(link=report.resolve().as_uri(), link_text="HTML report", key="mosear-pipeline-report")
    return {"outcomes": outcomes, "cached": cached, "outputs": outputs, "flow_start": flow_start}


def stage_flow(spec: StageSpec) -> Flow:
    """The Prefect flow ``mosear-{spec.name}``: one stage, one cached task.

    Parameters: ``config``, the stage's YAML config file or its fields inline (a deployment's
    defaults); ``overrides``, fields set on top (per run); ``mode`` / ``ray_address`` as for the
    pipeline. Returns the :class:`~mosear.orchestrate.dispatch.StageOutcome`.
    """

    def run_one(
        config: str | dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
        mode: Literal["embedded", "cluster"] = "embedded",
        ray_address: str | None = None,
    ) -> StageOutcome:
        inline = config if isinstance(config, dict) else {}
        request = StageRequest(
            stage=spec.name, config=config if isinstance(config, str) else None,
            overrides=_deep_merge(inline, overrides or {}), mode=mode, ray_address=ray_address,
        )
        return run_stage_task(prepare(request))[0]

    run_one.__name__ = run_one.__qualname__ = f"{spec.name}_flow"
    run_one.__doc__ = (f"``mosear {spec.name}`` as a flow: {spec.help}.\n\n``config``: a YAML file of "
                       f"{spec.config.rsplit(':', 1)[-1]} fields, or the fields inline; ``overrides``: fields set on top.")
    return flow(run_one, name=f"mosear-{spec.name}", **_HOOKS)


STAGE_FLOWS: dict[str, Flow] = {name: stage_flow(spec) for name, spec in STAGES.items()}
