"""Run one stage in one of two modes, behind one request type.

- **embedded**: the stage's Python entrypoint runs in this process (it starts or reuses a local
  Ray itself, see :func:`mosear.ray_utils.init_ray`).
- **cluster**: the stage's CLI is submitted to a Ray cluster with the Jobs API
  (:mod:`mosear.orchestrate.ray_jobs`); its logs are streamed back line by line.

A :class:`StageRequest` (what a user or a flow asks for: JSON-able) is resolved once by
:func:`prepare` into a :class:`PreparedStage`: its config validated (a bad value fails here, before
anything runs) and that validated object is what travels on, to the cache key, the Prefect task and
the stage's own ``run(cfg)``. :meth:`PreparedStage.fingerprint` computes the stage's identity and cache
key once, just before the stage runs (its inputs may be an earlier stage's output): the identity is
:func:`mosear.identity.stage_identity` (package version, the config fields that change the output, the
*content* digest of every input path), the key its digest plus the output folder. The stage records the
same identity in its commit marker; a cached result counts only while that marker matches it.

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
from mosear.orchestrate.registry import StageName, get_stage
from mosear.orchestrate.spec import StageSpec, first_rejects

__all__ = ["StageRequest", "StageOutcome", "PreparedStage", "prepare", "prepare_all", "check_inputs", "request_name",
           "cache_key", "run_stage", "summarize"]

log = logging.getLogger(__name__)

Mode = Literal["embedded", "cluster"]


class StageRequest(BaseModel):
    """Everything needed to run a stage (typed, JSON-able); :func:`prepare` validates it."""

    model_config = ConfigDict(extra="forbid")

    stage: StageName = Field(description="the stage (mosear.orchestrate.registry.STAGES)")
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


@dataclasses.dataclass(frozen=True)
class PreparedStage:
    """A request with its validated config; ``identity`` and ``cache_key`` once :meth:`fingerprint` ran."""

    request: StageRequest
    config: StageConfig
    identity: dict[str, Any] | None = None
    cache_key: str | None = None

    @property
    def spec(self) -> StageSpec:
        return get_stage(self.request.stage)

    @property
    def name(self) -> str:
        return request_name(self.request)

    @property
    def output(self) -> Path:
        return self.spec.output(self.config)

    @property
    def cache_dir(self) -> Path:
        """Where cache records and results live: the request's, else ``.mosear-cache`` beside the output."""
        if self.request.cache_dir:
            return Path(self.request.cache_dir).resolve()
        return self.output.resolve().parent / ".mosear-cache"

    def fingerprint(self) -> PreparedStage:
        """This stage with its identity (digests of its inputs as they are now) and cache key.

        ``{stage}-{sha256[:32]}`` of the identity digest, the output folder and the package version.
        Returns ``self`` when already fingerprinted: the inputs are digested once per run.
        """
        if self.cache_key is not None:
            return self
        identity = stage_identity(self.spec, self.config)
        parts = {"identity": identity_digest(identity), "output": str(self.output.resolve()),
                 "version": mosear.__version__}
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
        return dataclasses.replace(self, identity=identity, cache_key=f"{self.spec.name}-{digest}")


def prepare(req: StageRequest) -> PreparedStage:
    """Validate the request's config now; raise :class:`BadInputError` naming the stage's command.

    In cluster mode the config is first read as the job will read it (file + overrides, its path fields
    made absolute here, where relative paths mean something): the identity computed here and the one
    the job records in its marker then come from the same values.
    """
    spec = get_stage(req.stage)
    try:
        if req.mode == "cluster":
            from mosear.orchestrate.ray_jobs import absolutize_paths, raw_config

            try:
                raw = raw_config(req.config, req.overrides)
            except OSError as exc:
                raise ConfigError(f"config file {req.config}: {exc.strerror or exc}") from None
            req = req.model_copy(update={"config": None, "overrides": absolutize_paths(raw, spec.path_fields)})
        cfg = load_config(spec.config_cls(), req.config, dict(req.overrides) or None)
    except ConfigError as exc:  # the stage's own validation message, never retried
        raise BadInputError(f"mosear {spec.name}: bad config: {exc}") from None
    return PreparedStage(request=req, config=cfg)


def _path_values(spec: StageSpec, cfg: StageConfig) -> list[tuple[str, str]]:
    """``(field, value)`` of every path field of the config (``benchmarks[0].path``; ``name=`` stripped)."""
    data = cfg.model_dump(mode="json")
    out: list[tuple[str, str]] = []

    def add(name: str, value: Any) -> None:
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(v, str) and v:
                out.append((f"{name}[{i}]" if isinstance(value, list) else name, v.split("=", 1)[-1] if "=" in v else v))

    for field in (f.rstrip("!") for f in spec.path_fields):
        if "[]." in field:
            outer, inner = field.split("[].", 1)
            for i, item in enumerate(data.get(outer) or []):
                if isinstance(item, dict):
                    add(f"{outer}[{i}].{inner}", item.get(inner))
        else:
            node: Any = data
            for part in field.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            add(field, node)
    return out


def check_inputs(stages: list[PreparedStage]) -> None:
    """Every input path of every stage exists now, unless an earlier stage of ``stages`` writes it.

    Run before anything starts (no Prefect, no Ray, nothing written), so a misspelled path fails in a
    second with one line naming the stage, the config field and the path.
    Raises :class:`BadInputError`.
    """
    produced: list[Path] = []
    for stage in stages:
        spec = stage.spec
        try:
            inputs = spec.inputs(stage.config)
        except (OSError, ValueError, ConfigError) as exc:  # a source's root that is not a folder, ...
            raise BadInputError(f"mosear {spec.name}: bad input: {exc}") from None
        fields = {str(Path(v).resolve()): f for f, v in _path_values(spec, stage.config) if "://" not in v}
        for path in inputs:
            p = Path(path).resolve()
            if p.exists() or any(p == o or o in p.parents for o in produced):
                continue
            field = fields.get(str(p), "input")
            raise BadInputError(f"mosear {spec.name}: {field}: {p} does not exist")
        produced.append(stage.output.resolve())


def prepare_all(requests: list[StageRequest]) -> list[PreparedStage]:
    """Validate every stage's config before the first one runs (a typo in the eval section fails now)."""
    return [prepare(r) for r in requests]


def cache_key(req: StageRequest | PreparedStage) -> str:
    """The cache key of a request (validated and fingerprinted here when it was not yet)."""
    stage = req if isinstance(req, PreparedStage) else prepare(req)
    return stage.fingerprint().cache_key  # type: ignore[return-value]


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


def run_stage(stage: PreparedStage | StageRequest,
              logger: logging.Logger | logging.LoggerAdapter | None = None) -> StageOutcome:
    """Run the stage in the request's mode; raise a :class:`StageError` subclass on failure.

    ``stage`` is fingerprinted here unless it already was (the Prefect task passes it fingerprinted,
    so its cache key and the marker check below use one identity).
    """
    logger = logger or log
    stage = (stage if isinstance(stage, PreparedStage) else prepare(stage)).fingerprint()
    req, spec, cfg, output = stage.request, stage.spec, stage.config, stage.output
    t0 = time.perf_counter()
    ray_startup_s = 0.0
    if req.mode == "embedded":
        ray_startup_s = _start_embedded_ray(getattr(cfg, "ray_address", None) or getattr(cfg, "address", None), logger)
        logger.info("%s: running in-process -> %s", spec.name, output)
        sigint = _sigint_handler()
        try:
            result = spec.run_fn()(cfg)
        except StageError as exc:
            raise _with_rejects(exc, spec, output)
        except Exception as exc:  # the same classes as a cluster job's exit code (errors.EXIT_CODES)
            raise _with_rejects(classify(exc, f"mosear {spec.name}"), spec, output) from exc
        finally:
            # A stage's libraries may take over Ctrl-C and keep it: Ray Train's fit() installs its own
            # SIGINT handler and leaves it there, so a Ctrl-C in the next stage was swallowed. Put back
            # the process's handler (mosear run's: exit 130).
            _restore_sigint(sigint)
        summary, job_id = summarize(result), None
    else:
        from mosear.orchestrate.ray_jobs import RayJobRunner, raw_config

        if not req.ray_address:
            raise BadInputError(f"{spec.name}: cluster mode needs ray_address (the Jobs API URL)")
        runner = RayJobRunner(req.ray_address, logger=logger, result_dir=stage.cache_dir / "jobs")
        try:
            job_id = runner.run(spec, raw_config(req.config, req.overrides), stage.cache_key,
                                runtime_env=req.runtime_env, ship_package=req.ship_package)
        except StageError as exc:
            raise _with_rejects(exc, spec, output)
        summary = {}
        run_json = output / "run.json"
        if run_json.is_file():  # outputs on shared storage: read the stage's own record
            try:
                summary = summarize(json.loads(run_json.read_text()).get("totals", {}))
            except (OSError, ValueError, AttributeError):
                summary = {}
    seconds = time.perf_counter() - t0
    marker = read_marker(output) or {}
    if marker.get("digest") != identity_digest(stage.identity) or marker.get("status") not in ("complete", "partial"):
        from mosear.identity import changed

        why = "; ".join(changed(marker.get("identity"), stage.identity)) if marker else "no commit.json"
        raise StageError(f"{spec.name} finished but {output} holds no committed result of this run ({why})")
    for label, count, first, path in first_rejects(spec, output):
        summary[label] = count
        if count:
            summary[f"first {label}"] = first
            logger.warning("%s: %d %s, first: %s; the full list: %s", spec.name, count, label, "; ".join(first), path)
    partial = marker["status"] == "partial"
    if partial:
        logger.warning("%s: PARTIAL output (allow_partial): %d missing, first: %s", spec.name,
                       int(marker.get("missing_count", 0)), ", ".join(marker.get("missing", [])[:5]))
    return StageOutcome(
        stage=spec.name, output=str(output), cache_key=stage.cache_key, mode=req.mode, seconds=seconds,
        summary=summary, job_id=job_id, ray_startup_s=ray_startup_s, partial=partial,
        missing=list(marker.get("missing", []))[:20],
    )


def _sigint_handler() -> Any:
    """The current SIGINT handler, when this is the main thread (else None: nothing to restore)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.getsignal(signal.SIGINT)


def _restore_sigint(handler: Any) -> None:
    import signal

    if handler is not None and signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)


def _with_rejects(exc: StageError, spec: StageSpec, output: Path) -> StageError:
    """``exc`` with the first set-aside inputs and their reasons added, when its message points at the
    stage's reject file (mine's "no sample survived mining (1 dropped; see .../dropped.parquet)")."""
    for label, count, first, path in first_rejects(spec, output):
        if count and path.name in str(exc):
            exc.args = (f"{exc}; first {label}: {'; '.join(first)}",)
    return exc


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
