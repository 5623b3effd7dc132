"""The Prefect side of a stage: one cached, retried task, its artifacts and the cancel hook.

The flows (:mod:`mosear.orchestrate.flows`) stay thin by calling :func:`run_stage_task`:

- **cache**: the task's cache key is the stage's :meth:`~mosear.orchestrate.dispatch.PreparedStage.fingerprint`
  (content digests of the inputs + the config), computed once before the task and carried by its
  parameter. Cache records and results are written under the request's cache folder
  (``.mosear-cache`` beside the outputs by default), so a pipeline killed mid-way and started again
  restores the finished stages instead of running them, across processes and without a server. A
  cached result counts only while the output's commit marker (``commit.json``) records this very
  identity and says ``complete``: an output deleted, overwritten by another run, or left partial runs
  again (``refresh_cache``), so nothing partial or stale is served as complete.
- **retries**: up to ``retries`` with exponential backoff, only when
  :func:`mosear.orchestrate.errors.is_transient` says the failure was the machinery's (a Ray job that
  died or was stopped, a lost connection); bad input fails the flow run at once with the stage's own
  message, which Prefect logs with the traceback.
- **artifacts**: a markdown table per stage and links to its outputs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from mosear.orchestrate.dispatch import PreparedStage, StageOutcome, StageRequest, prepare, run_stage
from mosear.orchestrate.errors import is_transient
from mosear.orchestrate.registry import get_stage

__all__ = ["run_stage_task", "stage_task", "summary_markdown", "stop_jobs_on_cancel", "RETRIES"]

log = logging.getLogger(__name__)

RETRIES = 2
BACKOFF_S = float(os.environ.get("MOSEAR_RETRY_BACKOFF_S", "10"))  # first retry delay; doubles after


def _task_cache_key(_ctx: Any, params: dict[str, Any]) -> str | None:
    """The key :func:`run_stage_task` computed before calling the task (never recomputed here)."""
    stage = params["stage"]
    return stage.cache_key if isinstance(stage, PreparedStage) else None


def _retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:
        transient = is_transient(exc)
        log.warning("stage failed with %s: %s", type(exc).__name__, "retrying" if transient else "not retried (bad input)")
        return transient
    return False


@task(
    name="stage",
    retries=RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=BACKOFF_S),
    retry_condition_fn=_retry_if_transient,
    cache_policy=CacheKeyFnPolicy(cache_key_fn=_task_cache_key),
    persist_result=True,
    result_serializer="json",  # cache records are readable JSON, never a pickle to load
)
def stage_task(stage: PreparedStage) -> StageOutcome:
    """Run one prepared, fingerprinted stage (embedded or cluster) and return where its output is."""
    return run_stage(stage, get_run_logger())


def _artifact_key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:100]


def summary_markdown(outcomes: dict[str, StageOutcome], cached: dict[str, bool] | None = None) -> str:
    """A markdown table, one row per run (``name``: the stage or ``train:<method>``): state, seconds,
    output and the stage's own counts."""
    cached = cached or {}
    lines = ["| stage | state | seconds | output | summary |", "|---|---|---:|---|---|"]
    for name, o in outcomes.items():
        counts = ", ".join(f"{k}={v}" for k, v in o.summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        state = "cached" if cached.get(name) else "ran"
        if o.partial:
            state += f" (PARTIAL: {len(o.missing)} missing)"
        lines.append(f"| {name} | {state} | {o.seconds:.1f} | `{o.output}` | {counts or '-'} |")
    return "\n".join(lines)


def _record_artifacts(name: str, outcome: StageOutcome, was_cached: bool) -> None:
    spec = get_stage(outcome.stage)
    create_markdown_artifact(
        markdown=f"### mosear {name}\n\n" + summary_markdown({name: outcome}, {name: was_cached}),
        key=_artifact_key(f"mosear-{name}-summary"),
        description=f"{name} outputs and counts",
    )
    out = Path(outcome.output)
    for label, rel in spec.artifacts.items():
        target = out / rel
        if target.exists():
            create_link_artifact(
                link=target.resolve().as_uri(), link_text=f"{name}: {label}",
                key=_artifact_key(f"mosear-{name}-{label}"),
            )


def run_stage_task(stage: PreparedStage | StageRequest, artifacts: bool = True) -> tuple[StageOutcome, bool]:
    """Run ``stage`` as :func:`stage_task`, cached under its cache folder; return (outcome, cached).

    A request is validated here (:func:`~mosear.orchestrate.dispatch.prepare`); a prepared stage is
    used as it is. Its identity and cache key are computed once, now. Must be called inside a flow;
    raises the stage's error (the flow run fails with it).
    """
    logger = get_run_logger()
    stage = (stage if isinstance(stage, PreparedStage) else prepare(stage)).fingerprint()
    spec, cache_dir = stage.spec, stage.cache_dir
    options = dict(
        name=f"mosear-{spec.name}",
        task_run_name=spec.name,
        result_storage=cache_dir / "results",
        cache_policy=CacheKeyFnPolicy(cache_key_fn=_task_cache_key).configure(key_storage=cache_dir / "keys"),
    )
    t = stage_task.with_options(**options)
    state = t(stage=stage, return_state=True)
    outcome: StageOutcome = state.result()  # raises the stage's exception on failure
    was_cached = state.name == "Cached"
    if was_cached:
        why = None
        if outcome.partial:
            why = "the cached result is partial"
        elif not spec.is_complete(Path(outcome.output), stage.identity):
            why = f"{outcome.output} is incomplete now or holds another run's output"
        if why:
            logger.warning("%s: %s; running it again", spec.name, why)
            state = t.with_options(refresh_cache=True)(stage=stage, return_state=True)
            outcome, was_cached = state.result(), False
    if was_cached:
        logger.info("%s: skipped, inputs and config unchanged (cache key %s)", spec.name, outcome.cache_key)
    else:
        logger.info("%s: done in %.1f s -> %s", spec.name, outcome.seconds, outcome.output)
    if artifacts:
        _record_artifacts(stage.name, outcome, was_cached)
    return outcome, was_cached


def stop_jobs_on_cancel(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (on_cancellation / on_crashed): stop the Ray jobs this flow run submitted."""
    params = flow_run.parameters or {}
    address = params.get("ray_address")
    if params.get("mode") != "cluster" or not address:
        return
    from mosear.orchestrate.ray_jobs import stop_flow_run_jobs

    try:
        stopped = stop_flow_run_jobs(address, str(flow_run.id))
    except Exception as exc:
        log.error("could not stop the Ray jobs of flow run %s: %s", flow_run.id, exc)
        return
    if stopped:
        log.warning("flow run %s %s: stopped Ray jobs %s", flow_run.id, state.name, stopped)
