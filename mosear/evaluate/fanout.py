"""``run_eval``: fan checkpoint × benchmark × setting out as Ray tasks, one Parquet file per unit.

Flow: plan every unit and its cache id (:func:`~mosear.evaluate.units.plan_units`, which reads and
validates every benchmark first, so a bad label file fails before any model loads) → skip units whose
file exists → run the rest as Ray tasks (``max_retries`` covers a worker that dies; an exception in a
unit is recorded, the other units go on) → write ``units.json`` (the units of this config) and
``run.json`` (counts, failures, timings) → rebuild ``metrics.parquet`` and ``report.html``.

A rerun recomputes only what is missing: the failed units, or units whose checkpoint, benchmark
files, shards or setting changed (their cache id changed).
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from mosear.evaluate.config import EvalConfig
from mosear.evaluate.units import UnitSpec, plan_units, unit_path

__all__ = ["EvalResult", "run_eval", "FAULT_ENV"]

log = logging.getLogger(__name__)

# Fault reproduction for tests and drills: a unit whose file name contains this variable's value
# kills its own worker process (once per marker file named by MOSEAR_EVAL_FAULT_ONCE, if set).
FAULT_ENV = "MOSEAR_EVAL_FAULT_KILL"


@dataclass
class EvalResult:
    output: Path
    units: int
    computed: list[str] = field(default_factory=list)   # unit files written by this run
    cached: list[str] = field(default_factory=list)     # unit files found done
    failed: dict[str, str] = field(default_factory=dict)  # unit file -> error
    report: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _maybe_fault(unit: UnitSpec) -> None:
    target = os.environ.get(FAULT_ENV)
    if not target or target not in unit.filename:
        return
    once = os.environ.get("MOSEAR_EVAL_FAULT_ONCE")
    if once:
        marker = Path(once)
        if marker.exists():
            return
        marker.write_text(unit.filename)
    os._exit(17)  # a worker dying mid-unit, as an OOM kill would


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

    _maybe_fault(unit)
    return run_unit(cfg, unit, bench)


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Evaluate every unit of ``cfg`` that is not cached; write units, metrics and the report."""
    t0 = time.perf_counter()
    out = Path(cfg.output)
    (out / "units").mkdir(parents=True, exist_ok=True)
    for stale in (out / "units").glob("*.tmp"):  # left by a run killed mid-write; never a finished unit
        stale.unlink(missing_ok=True)
    units, benches = plan_units(cfg)
    from mosear.evaluate.protocol import check_overlap, write_protocol

    # Before any unit: a checkpoint is never scored on keys it trained on unless the user insists.
    protocol = check_overlap(cfg, benches, {n: b.calibration for n, b in benches.items() if b.calibration})
    protocol["methods"] = dict(cfg.methods)
    write_protocol(out, protocol)
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
    manifest = json.dumps({"config_hash": cfg.hash(exclude=cfg.hash_exclude()),
                           "units": [u.filename for u in units]}, indent=1)
    old = (out / "units.json").read_text() if (out / "units.json").is_file() else None
    (out / "units.json").write_text(manifest)
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
    result.seconds = time.perf_counter() - t0
    run = {"config": cfg.model_dump(mode="json"), "units": len(units), "protocol": protocol, "computed": result.computed,
           "cached": result.cached, "failed": result.failed, "seconds": round(result.seconds, 3),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "run.json").write_text(json.dumps(run, indent=1))
    return result


def _run_ray(cfg: EvalConfig, todo: list[UnitSpec], benches: dict, result: EvalResult) -> None:
    from mosear.ray_utils import init_ray

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
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            unit = pending.pop(ref)
            try:
                ray.get(ref)
                result.computed.append(unit.filename)
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
