"""``mosear report RESULTS_DIR``: rebuild ``metrics.parquet``, ``plots/`` and ``report.html`` from the
unit Parquet files that ``mosear eval`` wrote (no model, no Ray needed)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", nargs="?", default="reports", help="the eval output folder (default: reports)")


def main(args: argparse.Namespace) -> int:
    from mosear.evaluate.report import build_report

    try:
        path = build_report(args.results_dir)
    except FileNotFoundError as exc:
        print(f"mosear report: {exc}")
        return 2
    print(f"report: {path}")
    return 0
