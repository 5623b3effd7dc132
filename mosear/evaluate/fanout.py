"""``run_eval``: fan checkpoint × benchmark × setting out as Ray tasks, one Parquet file per unit.

Flow: plan every unit and its cache id (:func:`~mosear.evaluate.units.plan_units`, which reads and
validates every benchmark first, so a bad label file fails before any model loads) → skip units whose
file exists → run the rest as Ray tasks (``max_retries`` covers a worker that dies; an exception in a
unit, an environment or code error (:mod:`mosear.item_errors`: an unreachable endpoint, a bug), is
recorded as that unit's failure and no file is written for it; the other units go on) → write ``units.json`` (the units of this config) and
``run.json`` (counts, failures, timings) → rebuild ``metrics.parquet`` and ``report.html`` → write
``commit.json`` (the stage's marker, :mod:`mosear.identity`) last. Every file is written atomically.

Failure policy: a failed unit leaves the stage failed (:class:`~mosear.orchestrate.errors.StageFailedError`,
exit 1, the count and first reasons) after ``run.json`` records it; metrics, report and marker are not
written, so nothing partial passes for complete. With ``allow_partial=true`` metrics and report are
built from the finished units, the report and ``units.json`` name the missing ones, and the marker says
``partial``.

A rerun recomputes only what is missing: the failed units, or units whose checkpoint, benchmark
files, shards or setting changed (their cache id changed).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from mosear.atomic import atomic_write_json, remove_stale_temps
from mosear.evaluate.config import EvalConfig
from mosear.evaluate.spec import SPEC
from mosear.evaluate.units import UnitSpec, checkpoint_names, plan_units, unit_path
from mosear.identity import default_memo, stage_identity, write_marker
from mosear.orchestrate.errors import StageFailedError

__all__ = ["EvalResult", "run_eval"]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    output: Path
    units: int
    computed: list[str] = field(default_factory=list)   # unit files written by this run
    cached: list[str] = field(default_factory=list)     # unit files found done
    failed: dict[str, str] = field(default_factory=dict)  # unit file -> error
    item_errors: dict[str, int] = field(default_factory=dict)  # data errors of computed units' items, by reason
    report: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _readable(path: Path) -> bool:
    """A finished unit file has a Parquet footer with the unit's metadata. One that does not (damaged
    after it was written: a disk fault, a bad copy) is renamed ``*.broken`` and its unit is redone."""
    import pyarrow.parquet as pq

    try:
        if b"mosear.unit" in (pq.read_schema(path).metadata or {}):
            return True
        reason = "no mosear.unit metadata"
    except Exception as exc:  # noqa: BLE001 - any unreadable file is redone, with the reason logged
        reason = f"{type(exc).__name__}: {exc}"
    log.warning("unit file %s is unreadable (%s): kept as %s.broken, recomputing", path.name, reason, path.name)
    path.replace(path.with_name(path.name + ".broken"))
    return False


def _unit_task(cfg: EvalConfig, unit: UnitSpec, bench) -> dict:
    """Ray task body: run one unit (see :mod:`mosear.evaluate.runner`) and return its summary."""
    from mosear.evaluate.runner import run_unit

    return run_unit(cfg, unit, bench)


def _preflight_models(cfg: EvalConfig) -> None:
    """Model folders of transformers audio-visual checkpoints (``preset: hf-av``, for ``base`` or recorded in
    an adapter's model_config.json) are checked before any unit runs: an unsupported architecture, a
    missing processor file or a model without audio tower stops the run with the reason."""
    from mosear.model.config import ModelConfig
    from mosear.model.hf_av import preflight_model

    seen = set()
    for _, path in checkpoint_names(cfg.checkpoints):
        if path == "endpoint":
            continue
        if path == "base":
            raw = dict(cfg.model)
        else:
            try:  # an unreadable config is that unit's failure (reported with it), not the run's
                raw = json.loads((Path(path) / "model_config.json").read_text())
            except (OSError, ValueError):
                continue
        if not isinstance(raw, dict) or raw.get("preset") != "hf-av" or json.dumps(raw, sort_keys=True) in seen:
            continue
        seen.add(json.dumps(raw, sort_keys=True))
        preflight_model(ModelConfig.model_validate(raw))


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Evaluate every unit of ``cfg`` that is not cached; write units, metrics and the report."""
    t0 = time.perf_counter()
    out = Path(cfg.output)
    (out / "units").mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out / "units")  # left by a run killed mid-write; never a finished unit
    remove_stale_temps(out)
    (out / "commit.json").unlink(missing_ok=True)  # a run in progress is not a complete output
    memo = default_memo(out)
    identity = stage_identity(SPEC, cfg, memo)
    units, benches = plan_units(cfg, memo)
    from mosear.evaluate.protocol import check_overlap, write_protocol

    # Before any unit: a checkpoint is never scored on keys it trained on unless the user insists.
    protocol = check_overlap(cfg, benches, {n: b.calibration for n, b in benches.items() if b.calibration})
    protocol["methods"] = dict(cfg.methods)
    from mosear.evaluate.units import describe_plan

    protocol["evaluated"] = describe_plan(cfg, benches)  # what ran and what was skipped, for the report
    from mosear.evaluate.baseline import majority_baselines

    protocol["baselines"] = majority_baselines(protocol, benches)  # the table's training-majority row
    write_protocol(out, protocol)
    _preflight_models(cfg)
    if cfg.endpoint is not None and cfg.endpoint.preflight and any(u.checkpoint == "endpoint" for u in units):
        from mosear.evaluate.endpoint import preflight_endpoint

        preflight_endpoint(cfg.endpoint)  # an endpoint that rejects audio (or is down) fails before any unit
    result = EvalResult(output=out, units=len(units))
    todo: list[UnitSpec] = []
    for u in units:
        path = unit_path(out, u)
        if path.is_file() and _readable(path):
            result.cached.append(u.filename)
        else:
            todo.append(u)
    log.info("eval: %d units, %d cached, %d to run", len(units), len(result.cached), len(todo))
    if todo:
        _run_ray(cfg, todo, benches, result)
    result.seconds = time.perf_counter() - t0
    if result.item_errors:
        log.warning("eval: item data errors in the units computed now, by reason: %s (rows keep their `error`)",
                    ", ".join(f"{k}: {v}" for k, v in result.item_errors.items()))
    run = {"config": cfg.model_dump(mode="json"), "units": len(units), "protocol": protocol, "computed": result.computed,
           "cached": result.cached, "failed": result.failed, "item_errors": result.item_errors,
           "seconds": round(result.seconds, 3),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if result.failed and not cfg.allow_partial:
        atomic_write_json(out / "run.json", run, indent=1)
        raise StageFailedError("mosear eval", len(result.failed), len(units), result.failed,
                               hint=" units; the finished ones are kept and a rerun computes only the failed ones"
                               " (allow_partial=true builds metrics and report without them)")
    missing = sorted(result.failed)
    manifest = {"config_hash": cfg.output_hash(), "units": [u.filename for u in units if u.filename not in result.failed],
                **({"missing": missing} if missing else {})}
    old = _read_json(out / "units.json")
    atomic_write_json(out / "units.json", manifest, indent=1)
    up_to_date = (not result.computed and old == manifest and (out / "metrics.parquet").is_file()
                  and (not cfg.report or (out / "report.html").is_file()))
    if up_to_date:  # a rerun with everything cached: metrics and report are those of these very units
        result.report = out / "report.html" if cfg.report else None
    elif result.computed or result.cached:
        if cfg.report:
            from mosear.evaluate.report import build_report

            result.report = build_report(out)  # recomputes metrics.parquet too
        else:
            from mosear.evaluate.aggregate import compute_metrics

            compute_metrics(out)
    result.seconds = run["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_json(out / "run.json", run, indent=1)
    write_marker(out, identity, "partial" if missing else "complete", missing=missing, missing_count=len(missing),
                 totals={"units": len(units), "computed": len(result.computed), "cached": len(result.cached)})
    return result


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _run_ray(cfg: EvalConfig, todo: list[UnitSpec], benches: dict, result: EvalResult) -> None:
    from mosear.ray_utils import init_ray, wait_one

    ray = init_ray(cfg.ray_address, num_cpus=cfg.num_workers)
    task = ray.remote(_unit_task).options(
        num_cpus=cfg.cpus_per_unit, num_gpus=cfg.gpus_per_unit, max_retries=cfg.unit_retries,
        retry_exceptions=False,  # a unit that raises has a reason (bad checkpoint, bad data): report it
        **({"runtime_env": cfg.runtime_env} if cfg.runtime_env else {}),
    )
    bench_refs = {name: ray.put(b) for name, b in benches.items()}
    pending = {task.remote(cfg, u, bench_refs[u.benchmark.name]): u for u in todo}
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), desc="eval units", unit="unit")
    while pending:
        done, _ = wait_one(list(pending))  # interruptible by Ctrl-C (ray_utils.wait_one)
        for ref in done:
            unit = pending.pop(ref)
            try:
                summary = ray.get(ref)
                result.computed.append(unit.filename)
                for reason, n in (summary.get("error_reasons") or {}).items():
                    result.item_errors[reason] = result.item_errors.get(reason, 0) + n
            except Exception as exc:  # noqa: BLE001 - every failure is recorded with its cause
                cause = getattr(exc, "cause", None) or exc
                msg = f"{type(cause).__name__}: {cause}".strip()
                log.error("unit %s failed: %s", unit.filename, msg.splitlines()[0] if msg else msg)
                log.debug("%s", "".join(traceback.format_exception(exc)))
                result.failed[unit.filename] = msg[-2000:]
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
