"""Orchestration of the four stages: the stage registry, requests, cache keys, embedded / cluster runs.

```
spec.py          StageSpec: what a stage is (each stage package's spec.py holds its own)
registry.py      STAGES: the four specs in pipeline order; everything that names a stage derives from it
dispatch.py      StageRequest -> prepare (validate once) -> fingerprint (identity, cache key) -> run_stage
                 (embedded or cluster) -> StageOutcome
ray_jobs.py      cluster mode: the Ray Jobs API
errors.py        failure classes and exit codes
workdir.py       a pipeline's workdir layout, its requests, the sample defaults
prefect_tasks.py the cached, retried Prefect task; artifacts; cancel hook
flows.py         the Prefect flows (pipeline, one per stage); flows/*.py are their entrypoints
cli.py           `mosear run`
```

Prefect-free core: spec, registry, dispatch, ray_jobs, errors (content identity in
:mod:`mosear.identity`). Names load lazily, so a stage package importing :mod:`.spec` or
:mod:`.errors` does not pull in the registry (which imports every stage's spec).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BadInputError": "errors", "StageError": "errors", "TransientStageError": "errors", "is_transient": "errors",
    "StageOutcome": "dispatch", "StageRequest": "dispatch", "PreparedStage": "dispatch", "prepare": "dispatch",
    "cache_key": "dispatch", "run_stage": "dispatch",
    "STAGES": "registry", "STAGE_ORDER": "registry", "get_stage": "registry", "stage_available": "registry",
    "StageSpec": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mosear.orchestrate.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mosear.orchestrate' has no attribute {name!r}")
