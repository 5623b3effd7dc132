"""``mosear report RESULTS_DIR``: rebuild ``metrics.parquet``, ``plots/`` and ``report.html`` from the
unit Parquet files that ``mosear eval`` wrote (no model, no Ray needed)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the default is where `mosear run` (default --workdir runs/samples) writes its eval output
    parser.add_argument("results_dir", nargs="?", default="runs/samples/reports",
                        help="the eval output folder (default: runs/samples/reports, where `mosear run` writes)")


def main(args: argparse.Namespace) -> int:
    from mosear.evaluate.report import build_report

    try:
        path = build_report(args.results_dir)
    except FileNotFoundError as exc:
        print(f"mosear report: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
