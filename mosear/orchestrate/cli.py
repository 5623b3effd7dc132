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
    parser.epilog = "examples:" + __doc__.split("Examples::", 1)[1]
    parser.add_argument("--corpus", default=None, help="corpus YAML or folder (default: datasets/samples/corpus_splices.yaml, the sample corpus with its face/voice splices)")
    parser.add_argument("--workdir", default="runs/samples", help="output root: shards/, mined/, train/, reports/")
    parser.add_argument("--stages", default="shard,mine,train,eval", help="comma-separated stages to run, in order")
    parser.add_argument("--mode", choices=("embedded", "cluster"), default="embedded",
                        help="embedded: in-process Ray; cluster: submit each stage with the Ray Jobs API")
    parser.add_argument("--ray-address", default=None, help="cluster mode: Ray Jobs API address (http://head:8265)")
    parser.add_argument("--config", default=None,
                        help="pipeline YAML: one section per stage (shard:, mine:, train:, eval:) of config fields")
    parser.add_argument("--timings", default=None, help="write per-stage and start-up timings to this JSON file")
    parser.add_argument("--help-config", action="store_true",
                        help="list every stage's config fields (set them as stage.key=value) and exit")
    parser.add_argument("overrides", nargs="*", default=[], help="stage.key=value, e.g. train.max_steps=50")


def _stage_overrides(config: str | None, overrides: list[str]) -> dict[str, dict[str, Any]]:
    import yaml

    data: dict[str, Any] = {}
    if config:
        p = Path(config)
        if not p.is_file():
            raise ConfigError(f"pipeline config {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"pipeline config {p}: not YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"pipeline config {p}: expected one section per stage (shard:, mine:, ...)")
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


def validate(args: argparse.Namespace) -> tuple[str, list[str], dict[str, dict[str, Any]]]:
    """Check the whole request before anything starts: the stage list, the pipeline config and every
    stage's config (each ``stage.key=value`` against the stage's fields), and that every input path
    exists unless an earlier stage of this run writes it. Nothing is imported beyond the configs and
    nothing is written: a typo fails in about a second. Returns ``(corpus, stages, overrides)``;
    raises :class:`ConfigError` / :class:`~mosear.orchestrate.errors.BadInputError` (one line each).
    """
    from mosear.orchestrate.dispatch import check_inputs, prepare_all
    from mosear.orchestrate.registry import STAGE_ORDER
    from mosear.orchestrate.workdir import pipeline_requests

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown or not stages:
        raise ConfigError(f"--stages: {unknown or args.stages!r} not a stage; stages are {','.join(STAGE_ORDER)}")
    if args.mode == "cluster" and not args.ray_address:
        raise ConfigError("--mode cluster needs --ray-address (the Ray Jobs API URL, e.g. http://head:8265)")
    corpus = args.corpus or str(find_repo_file("datasets/samples/corpus_splices.yaml"))
    if "shard" in stages and "://" not in corpus and not Path(corpus).exists():
        raise ConfigError(f"--corpus: {corpus} does not exist")
    overrides = _stage_overrides(args.config, args.overrides)
    prepared = prepare_all(pipeline_requests(corpus, args.workdir, stages, mode=args.mode,
                                             ray_address=args.ray_address, overrides=overrides))
    if args.mode == "embedded" or "://" not in args.workdir:  # a cluster on other storage sees other paths
        check_inputs(prepared)
    return corpus, stages, overrides


def _help_config(stages: list[str]) -> int:
    from mosear.config import describe_config
    from mosear.orchestrate.registry import STAGES

    print("mosear run: every stage's config fields; set them as stage.key=value or in a --config YAML section.\n"
          "The pipeline sets the paths (corpus, shards, output, ...) itself.\n")
    for name in stages:
        print(f"[{name}]")
        print(describe_config(STAGES[name].config_cls()))
        print()
    return 0


_CLEANING_UP: list[bool] = []  # set once the interrupted run is stopping: no more re-interrupts


def _keep_interrupting(every_s: float = 3.0) -> None:
    """Raise KeyboardInterrupt in the main thread again every ``every_s`` until the clean-up starts.

    A KeyboardInterrupt raised while the main thread runs a finaliser (a weakref callback, ``__del__``)
    is printed as "Exception ignored" and lost; the run then went on to its end.
    """
    import _thread

    while not _CLEANING_UP:
        time.sleep(every_s)
        if not _CLEANING_UP:
            _thread.interrupt_main()


def _on_sigint(signum: int, frame: Any) -> None:
    from mosear.orchestrate.errors import interrupted, mark_interrupted

    if not interrupted():
        import threading

        threading.Thread(target=_keep_interrupting, name="mosear-interrupt", daemon=True).start()
    mark_interrupted()  # nothing is retried from now on (prefect_tasks._retry_if_transient)
    raise KeyboardInterrupt


def _start_temporary_server() -> None:
    """Start Prefect's temporary API server in a session of its own, before the flow needs it.

    Ctrl-C in a terminal reaches every process of the foreground group: a server started there dies
    with the run, and Prefect then fails to record the interruption (connection errors, retries, exit
    75 after minutes). In its own session the server outlives the Ctrl-C long enough for the run to
    report it; Prefect stops it at exit as usual (``atexit``). No-op with ``PREFECT_API_URL`` set.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    import functools
    import subprocess
    from unittest import mock

    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's clients use (one per port; None: any)
    if server.running:
        return
    with mock.patch.object(subprocess, "Popen", functools.partial(subprocess.Popen, start_new_session=True)):
        server.start()


def _stop_runtime(drain_s: float = 5.0) -> None:
    """Stop the in-process Ray and the temporary Prefect server now, so that the printed total is the
    wall time (otherwise they stop at interpreter exit, after it)."""
    import sys as _sys

    if "ray" in _sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    if "prefect.server.api.server" in _sys.modules:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker
        from prefect.server.api.server import SubprocessASGIServer

        # hand the run's last log lines and events to the server while it is up (at exit they would be
        # retried against a stopped server for seconds)
        for worker in (APILogWorker, EventsWorker):
            try:
                worker.drain_all(timeout=drain_s)
            except Exception:  # noqa: BLE001 - best effort; the run's outcome is already decided
                pass
        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()


def main(args: argparse.Namespace) -> int:
    if args.help_config:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        return _help_config(stages)
    _prefect_env()
    corpus, stages, overrides = validate(args)  # before Prefect or Ray: a typo fails in a second
    from mosear.orchestrate.registry import stage_available

    missing = [s for s in stages if not stage_available(s)]
    if missing:
        print(f"mosear run: stage(s) {missing} are not installed in this build; run --stages without them", file=sys.stderr)
        return 2
    import logging
    import signal

    for noisy in ("httpx", "httpcore"):  # one line per API call otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        _start_temporary_server()
        pipeline = load_pipeline_flow()
        state = pipeline(
            corpus=corpus, workdir=args.workdir, stages=stages, overrides=overrides,
            mode=args.mode, ray_address=args.ray_address, return_state=True,
        )
    except KeyboardInterrupt:
        state = None
    from mosear.orchestrate.errors import interrupted

    if interrupted() or state is None:
        _CLEANING_UP.append(True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not break the clean-up
        print("\nmosear run: interrupted; the same command resumes (finished stages and units are kept)",
              file=sys.stderr)
        _stop_runtime(drain_s=1.0)
        # Ray and the server are stopped: leave now. Interpreter finalization after an interrupted run
        # (joining library threads, atexit hooks retrying against stopped services, tearing down torch
        # and Ray) took 10-15 s on a loaded machine; a user who pressed Ctrl-C waits for none of it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    if not state.is_completed():
        from mosear.orchestrate.errors import exit_code

        try:
            state.result()
        except Exception as exc:
            logging.getLogger("prefect").setLevel(logging.WARNING)  # its "Stopping temporary server" line
            _stop_runtime()
            print(f"\nmosear run: {state.name}: {exc}", file=sys.stderr)  # the last line: the cause
            return exit_code(exc)  # the failed stage's class: 1 failed units, 2 bad input, 3 refused, 75 transient
        return 1
    result = state.result()
    _print_outputs(result, stages)
    # Prefect logs "Stopping temporary server" at exit, after the table; only that INFO line goes
    # (the run is over: its warnings and errors were printed above).
    logging.getLogger("prefect").setLevel(logging.WARNING)
    if "eval" in stages:  # the output ends with the method x subset table of the report
        from mosear.evaluate.headline import print_tables

        print_tables(Path(result["outputs"]["report"]).parent)
    _stop_runtime()
    timings = _timings(result, time.time())
    print(
        f"\ntotal {timings['total_s']:.1f} s (wall time since the command started): Prefect start-up "
        f"{timings['prefect_startup_s']:.1f} s, "
        + ", ".join(f"{s} {t['seconds']:.1f} s{' (cached)' if t['cached'] else ''}" for s, t in timings["stages"].items())
    )
    if args.timings:
        from mosear.atomic import atomic_write_json

        atomic_write_json(args.timings, timings)
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
    from mosear.orchestrate.registry import STAGES

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
            spec = STAGES.get(stage)
            for what, rel in (spec.rejects.items() if spec and o is not None else []):
                if o.summary.get(what):
                    print(f"  {'':<16} {o.summary[what]} {what}, first: {'; '.join(o.summary.get(f'first {what}', []))}"
                          f" (all: {Path(path) / rel})")
