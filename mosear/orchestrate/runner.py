"""Run one stage in one of two modes, behind one request type.

- **embedded**: the stage's Python entrypoint runs in this process (it starts or reuses a local
  Ray itself, see :func:`mosear.ray_utils.init_ray`).
- **cluster**: the stage's CLI is submitted to a Ray cluster with the Jobs API
  (:mod:`mosear.orchestrate.ray_jobs`); its logs are streamed back line by line.

Both modes take the same :class:`StageRequest` and return the same :class:`StageOutcome`.
:func:`cache_key` is what makes a pipeline rerun skip finished stages: the digest of the stage's
identity (:func:`mosear.identity.stage_identity`: package version, the config fields that change the
output, the *content* digest of every input path), plus the output folder. The stage records the same
identity in its commit marker; a cached result counts only while that marker matches it.

Failure policy (the same in both modes): a stage that raises fails; a stage whose marker says
``partial`` (some shards or units failed and the config allowed it) succeeds with
``StageOutcome.partial`` set and ``missing`` listed, and is never served from the cache as complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import mosear
from mosear.config import ConfigError, StageConfig, load_config
from mosear.identity import identity_digest, read_marker, stage_identity
from mosear.orchestrate.errors import BadInputError, StageError, classify
from mosear.orchestrate.stages import get_stage

__all__ = ["StageRequest", "request_name", "StageOutcome", "resolve_config", "validate_requests", "cache_key", "run_stage", "summarize"]

log = logging.getLogger(__name__)

Mode = Literal["embedded", "cluster"]


class StageRequest(BaseModel):
    """Everything needed to run a stage: the Prefect task's single parameter (typed, JSON-able)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["shard", "mine", "train", "eval"]
    label: str | None = Field(
        None, description="this run's name in a pipeline when a stage runs more than once (train:lora); default: the stage"
    )
    config: str | None = Field(None, description="the stage's YAML config file (optional)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="config fields set on top")
    mode: Mode = Field("embedded", description="embedded: in-process; cluster: Ray Jobs API")
    ray_address: str | None = Field(
        None, description="cluster mode: the Ray dashboard / Jobs API address (http://head:8265)"
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="cluster mode: extra runtime_env for the job (image, pip, env_vars, ...)"
    )
    ship_package: bool = Field(
        True, description="cluster mode: upload this mosear package as a py_module (off when the image has it)"
    )
    cache_dir: str | None = Field(
        None, description="where cache records and the input-hash memo live (default: beside the output)"
    )


def request_name(req: StageRequest) -> str:
    """What a pipeline calls this request: its label, else its stage."""
    return req.label or req.stage


class StageOutcome(BaseModel):
    """What a stage run leaves behind; persisted as the Prefect task result (the cache record)."""

    stage: str
    output: str
    cache_key: str
    mode: Mode
    seconds: float
    ray_startup_s: float = 0.0  # part of `seconds` spent starting the embedded Ray (first stage only)
    summary: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    partial: bool = False  # the stage allowed partial output and some of it is missing
    missing: list[str] = Field(default_factory=list)  # first names of what is missing (shards, units)


def resolve_config(req: StageRequest) -> StageConfig:
    """Validate the request's config now (a bad value fails before anything runs)."""
    spec = get_stage(req.stage)
    return load_config(spec.config_cls(), req.config, dict(req.overrides) or None)


def validate_requests(requests: list[StageRequest]) -> None:
    """Validate every stage's config before the first one runs; raise BadInputError naming the stage."""
    for req in requests:
        try:
            resolve_config(req)
        except ConfigError as exc:
            raise BadInputError(f"mosear {get_stage(req.stage).command}: bad config: {exc}") from None


def default_cache_dir(req: StageRequest, cfg: StageConfig) -> Path:
    if req.cache_dir:
        return Path(req.cache_dir)
    return get_stage(req.stage).output(cfg).resolve().parent / ".mosear-cache"


def request_identity(req: StageRequest, cfg: StageConfig | None = None) -> dict[str, Any]:
    """The stage identity of ``req`` (what its commit marker must record to count as its result)."""
    return stage_identity(req.stage, cfg or resolve_config(req))


def cache_key(req: StageRequest, cfg: StageConfig | None = None, identity: dict[str, Any] | None = None) -> str:
    """``{stage}-{sha256[:32]}`` of the stage's identity digest and its output folder."""
    spec = get_stage(req.stage)
    cfg = cfg or resolve_config(req)
    identity = identity or request_identity(req, cfg)
    parts = {"identity": identity_digest(identity), "output": str(spec.output(cfg).resolve()),
             "version": mosear.__version__}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return f"{spec.name}-{digest}"


def summarize(result: Any) -> dict[str, Any]:
    """A stage result object as a flat dict of JSON scalars (for the summary table)."""
    if result is None:
        return {}
    if isinstance(result, BaseModel):
        data = result.model_dump(mode="json")
    elif dataclasses.is_dataclass(result):
        data = dataclasses.asdict(result)
    elif isinstance(result, dict):
        data = dict(result)
    else:
        data = {k: v for k, v in vars(result).items() if not k.startswith("_")} if hasattr(result, "__dict__") else {"result": str(result)}
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, Path):
            out[k] = str(v)
        elif isinstance(v, (list, tuple, dict)) and len(json.dumps(v, default=str)) <= 200:
            out[k] = json.loads(json.dumps(v, default=str))
    return out


def run_stage(req: StageRequest, logger: logging.Logger | logging.LoggerAdapter | None = None) -> StageOutcome:
    """Run the stage in the request's mode; raise a :class:`StageError` subclass on failure."""
    logger = logger or log
    spec = get_stage(req.stage)
    try:
        cfg = resolve_config(req)
    except ConfigError as exc:  # the stage's own validation message, never retried
        raise BadInputError(f"mosear {spec.command}: bad config: {exc}") from None
    identity = request_identity(req, cfg)
    key = cache_key(req, cfg, identity)
    output = spec.output(cfg)
    t0 = time.perf_counter()
    ray_startup_s = 0.0
    if req.mode == "embedded":
        ray_startup_s = _start_embedded_ray(getattr(cfg, "ray_address", None) or getattr(cfg, "address", None), logger)
        logger.info("%s: running in-process -> %s", spec.name, output)
        try:
            result = spec.run_fn()(cfg)
        except StageError:
            raise
        except Exception as exc:  # the same classes as a cluster job's exit code (errors.EXIT_CODES)
            raise classify(exc, f"mosear {spec.command}") from exc
        summary, job_id = summarize(result), None
    else:
        from mosear.orchestrate.ray_jobs import RayJobRunner, raw_config

        if not req.ray_address:
            raise BadInputError(f"{spec.name}: cluster mode needs ray_address (the Jobs API URL)")
        runner = RayJobRunner(req.ray_address, logger=logger)
        job_id = runner.run(spec, raw_config(req.config, req.overrides), key, runtime_env=req.runtime_env, ship_package=req.ship_package)
        summary = {}
        run_json = output / "run.json"
        if run_json.is_file():  # outputs on shared storage: read the stage's own record
            try:
                summary = summarize(json.loads(run_json.read_text()).get("totals", {}))
            except (OSError, ValueError, AttributeError):
                summary = {}
    seconds = time.perf_counter() - t0
    marker = read_marker(output) or {}
    if marker.get("digest") != identity_digest(identity) or marker.get("status") not in ("complete", "partial"):
        from mosear.identity import changed

        why = "; ".join(changed(marker.get("identity"), identity)) if marker else "no commit.json"
        raise StageError(f"{spec.name} finished but {output} holds no committed result of this run ({why})")
    partial = marker["status"] == "partial"
    if partial:
        logger.warning("%s: PARTIAL output (allow_partial): %d missing, first: %s", spec.name,
                       int(marker.get("missing_count", 0)), ", ".join(marker.get("missing", [])[:5]))
    return StageOutcome(
        stage=spec.name, output=str(output), cache_key=key, mode=req.mode, seconds=seconds,
        summary=summary, job_id=job_id, ray_startup_s=ray_startup_s, partial=partial,
        missing=list(marker.get("missing", []))[:20],
    )


def _start_embedded_ray(address: str | None, logger: Any) -> float:
    """Start (or connect) Ray once per process, timed, so start-up is told apart from work."""
    from mosear.ray_utils import init_ray, ray_env_defaults

    ray_env_defaults()
    import ray

    if ray.is_initialized():
        return 0.0
    t0 = time.perf_counter()
    init_ray(address=address)
    took = time.perf_counter() - t0
    logger.info("Ray %s in %.1f s", f"connected to {address}" if address else "started in-process", took)
    return took
