"""``mosear eval``: evaluate checkpoints × benchmarks × settings (AR off/on/sweep, modality removal).

    mosear eval --config configs/eval.yaml
    mosear eval checkpoints=[runs/mose/adapter] \
        'benchmarks=[{name: camer, format: mined, path: runs/mined}]' ar_sweep=[0.1,0.3,0.5]

Exit status: 0 when every unit is done, 1 when some failed (their errors are printed and kept in
``run.json``; a rerun retries only them), 2 on a bad config or benchmark file.
"""

from __future__ import annotations

import argparse
import json
import sys

from mosear.config import ConfigError, describe_config, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with EvalConfig fields")
    parser.add_argument("--help-config", action="store_true", help="print every config field and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys, YAML values)")


def main(args: argparse.Namespace) -> int:
    from mosear.evaluate.benchmark_files import BenchmarkFormatError
    from mosear.evaluate.config import EvalConfig
    from mosear.evaluate.endpoint import EndpointError

    if args.help_config:
        print(describe_config(EvalConfig))
        return 0
    cfg = load_config(EvalConfig, args.config, args.overrides)
    from mosear.evaluate.fanout import run_eval

    try:
        result = run_eval(cfg)
    except (BenchmarkFormatError, FileNotFoundError, ValueError, EndpointError) as exc:  # preflight: before any unit
        raise ConfigError(str(exc)) from None
    _print_headline(result.output)
    print(f"units: {result.units} ({len(result.computed)} computed, {len(result.cached)} cached, "
          f"{len(result.failed)} failed) in {result.seconds:.1f} s")
    print(f"predictions: {result.output / 'units'}")
    print(f"metrics:     {result.output / 'metrics.parquet'}")
    if result.report:
        print(f"report:      {result.report}")
    for name, err in result.failed.items():
        print(f"FAILED {name}: {err.splitlines()[-1] if err else ''}", file=sys.stderr)
    from mosear.evaluate.headline import print_tables

    print_tables(result.output)
    return 0 if result.ok else 1


def _print_headline(output) -> None:
    """The headline numbers (subset ``all``) per checkpoint × benchmark × setting; the report has all."""
    from pathlib import Path

    import pandas as pd

    path = Path(output) / "metrics.parquet"
    if not path.is_file():
        return
    m = pd.read_parquet(path)
    m = m[(m["subset"] == "all") & m["metric"].isin(["n", "accuracy", "weighted_f1", "uar", "conflict_gap", "ov_mean", "flip_rate", "unparsed", "errors", "judge_errors"])]
    if m.empty:
        return
    table = m.pivot_table(index=["checkpoint", "benchmark", "setting"], columns="metric", values="value", aggfunc="first")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(table.to_string())
