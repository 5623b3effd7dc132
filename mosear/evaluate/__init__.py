"""Evaluation: checkpoints × benchmarks × inference settings, fanned out on Ray, plus the report.

- :func:`run_eval` (``mosear eval``) — plan, run missing units as Ray tasks, write ``units/*.parquet``,
  ``metrics.parquet`` and ``report.html`` under ``EvalConfig.output``.
- :func:`build_report` (``mosear report``) — rebuild metrics and the report from the Parquet files.
- :mod:`.metrics`, :mod:`.judges`, :mod:`.benchmark_files` — metrics, open-vocabulary judges, readers of
  the benchmarks' label and reference files (the speed scripts are the top-level ``benchmarks/``).

Names are imported lazily so that ``import mosear.evaluate`` stays cheap (no Ray, no matplotlib).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EvalConfig": "mosear.evaluate.config",
    "BenchmarkSpec": "mosear.evaluate.config",
    "SettingSpec": "mosear.evaluate.config",
    "JudgeConfig": "mosear.evaluate.config",
    "EvalResult": "mosear.evaluate.fanout",
    "run_eval": "mosear.evaluate.fanout",
    "build_report": "mosear.evaluate.report",
    "load_benchmark": "mosear.evaluate.benchmark_files",
    "make_judge": "mosear.evaluate.judges",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mosear.evaluate' has no attribute {name!r}")
