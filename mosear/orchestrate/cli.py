"""``mosear run``: the whole pipeline (shard -> mine -> train -> eval) as one Prefect flow run.

With no options it runs on the built-in sample corpus in embedded mode: a local Ray started
in-process and Prefect's temporary (ephemeral) API server, so there is nothing to start by hand.
Prefect's log lines and each stage's progress bar show where it is; at the end it prints where the
shards, the mined benchmark, the checkpoint and the HTML report are.

A second run skips every finished stage (their inputs and config are hashed into cache keys); a run
killed half-way resumes at the stage it was in.

Examples::

    mosear run
    mosear run --stages shard,mine shard.num_frames=16
    mosear run --corpus my_corpus.yaml --workdir runs/mine --config pipeline.yaml train.max_steps=200
    mosear run --mode cluster --ray-address http://head:8265
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from mosear.config import ConfigError, _deep_merge, parse_overrides

__all__ = ["add_arguments", "main", "find_repo_file", "load_pipeline_flow"]

def _process_start() -> float:
    """When this process started (the baseline of "start-up"), from the OS; import time as a fallback."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return time.time()


_T0 = _process_start()


def find_repo_file(rel: str) -> Path:
    """``rel`` in the current folder, else in the repository this package was installed from."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):  # mosear/orchestrate/cli.py -> the repository
        if (base / rel).exists():
            return base / rel
    raise ConfigError(f"{rel} not found in {Path.cwd()} or beside the installed package; run from the repository root")


def load_pipeline_flow():
    """The ``pipeline`` flow, imported from the installed package (never a file from the working folder)."""
    from mosear.orchestrate.flows import pipeline

    return pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("Examples::", 1)[1]
    parser.add_argument("--corpus", default=None, help="corpus YAML or folder (default: datasets/samples/corpus_splices.yaml, the sample corpus with its face/voice splices)")
    parser.add_argument("--workdir", default="runs/samples", help="output root: shards/, mined/, train/, reports/")
    parser.add_argument("--stages", default="shard,mine,train,eval", help="comma-separated stages to run, in order")
    parser.add_argument("--mode", choices=("embedded", "cluster"), default="embedded",
                        help="embedded: in-process Ray; cluster: submit each stage with the Ray Jobs API")
    parser.add_argument("--ray-address", default=None, help="cluster mode: Ray Jobs API address (http://head:8265)")
    parser.add_argument("--config", default=None,
                        help="pipeline YAML: one section per stage (shard:, mine:, train:, eval:) of config fields")
    parser.add_argument("--timings", default=None, help="write per-stage and start-up timings to this JSON file")
    parser.add_argument("overrides", nargs="*", default=[], help="stage.key=value, e.g. train.max_steps=50")


def _stage_overrides(config: str | None, overrides: list[str]) -> dict[str, dict[str, Any]]:
    import yaml

    data: dict[str, Any] = {}
    if config:
        p = Path(config)
        if not p.is_file():
            raise ConfigError(f"pipeline config {p} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
    data = _deep_merge(data, parse_overrides(overrides))
    from mosear.orchestrate.registry import STAGE_ORDER

    bad = [k for k, v in data.items() if k not in STAGE_ORDER or not isinstance(v, dict)]
    if bad:
        raise ConfigError(f"pipeline overrides: {bad} are not stage sections; use stage.key=value with stage in {list(STAGE_ORDER)}")
    return data


def _prefect_env() -> None:
    """Defaults for an embedded run; a user's own settings win."""
    from mosear.ray_utils import ray_env_defaults

    ray_env_defaults()
    # The temporary API server needs 10-30 s to come up on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mosear")  # stage logs into the run's logs


def main(args: argparse.Namespace) -> int:
    _prefect_env()
    import logging

    for noisy in ("httpx", "httpcore"):  # one line per API call otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    corpus = args.corpus or str(find_repo_file("datasets/samples/corpus_splices.yaml"))
    overrides = _stage_overrides(args.config, args.overrides)
    if args.mode == "cluster" and not args.ray_address:
        raise ConfigError("--mode cluster needs --ray-address (the Ray Jobs API URL, e.g. http://head:8265)")
    from mosear.orchestrate.registry import stage_available

    missing = [s for s in stages if not stage_available(s)]
    if missing:
        print(f"mosear run: stage(s) {missing} are not installed in this build; run --stages without them", file=sys.stderr)
        return 2

    pipeline = load_pipeline_flow()
    state = pipeline(
        corpus=corpus, workdir=args.workdir, stages=stages, overrides=overrides,
        mode=args.mode, ray_address=args.ray_address, return_state=True,
    )
    t_end = time.time()
    if not state.is_completed():
        from mosear.orchestrate.errors import exit_code

        try:
            state.result()
        except Exception as exc:
            print(f"\nmosear run: {state.name}: {exc}", file=sys.stderr)
            return exit_code(exc)  # the failed stage's class: 1 failed units, 2 bad input, 3 refused, 75 transient
        return 1
    result = state.result()
    _print_outputs(result, stages)
    timings = _timings(result, t_end)
    print(
        f"\ntotal {timings['total_s']:.1f} s: Prefect start-up {timings['prefect_startup_s']:.1f} s, "
        + ", ".join(f"{s} {t['seconds']:.1f} s{' (cached)' if t['cached'] else ''}" for s, t in timings["stages"].items())
    )
    if args.timings:
        from mosear.atomic import atomic_write_json

        atomic_write_json(args.timings, timings)
    if "eval" in stages:  # the output ends with the method x subset table of the report
        from mosear.evaluate.headline import print_tables

        # Prefect logs "Stopping temporary server" at exit, after the table; only that INFO line goes
        # (the run is over: its warnings and errors were printed above).
        logging.getLogger("prefect").setLevel(logging.WARNING)

        print_tables(Path(result["outputs"]["report"]).parent)
    return 0


def _timings(result: dict[str, Any], t_end: float) -> dict[str, Any]:
    stages = {
        name: {
            "seconds": 0.0 if result["cached"][name] else o.seconds,  # a cached stage costs nothing now
            "ray_startup_s": 0.0 if result["cached"][name] else o.ray_startup_s,
            "cached": result["cached"][name],
        }
        for name, o in result["outcomes"].items()  # name: a stage, or train:<method>
    }
    return {
        "total_s": t_end - _T0,
        "prefect_startup_s": result["flow_start"] - _T0,
        "stages": stages,
    }


def _print_outputs(result: dict[str, Any], stages: list[str]) -> None:
    out = result["outputs"]
    rows = [("shard", "shards", out["shard"]), ("mine", "mined benchmark", out["mine"])]
    rows += [("train", f"checkpoint {k.split(':', 1)[1]}", v) for k, v in out.items() if k.startswith("checkpoint:")]
    rows += [("eval", "HTML report", out["report"])]
    print("\nmosear run finished. Outputs:")
    for stage, label, path in rows:
        if stage in stages:
            mark = "" if Path(path).exists() else "  (missing!)"
            o = result["outcomes"].get(stage)
            if o is not None and o.partial:
                mark += f"  (PARTIAL: {len(o.missing)} missing: {', '.join(o.missing[:3])})"
            print(f"  {label:<16} {path}{mark}")
