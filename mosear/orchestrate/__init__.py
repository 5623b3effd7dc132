"""Orchestration of the four stages: stage specs, cache keys, embedded / cluster execution.

Prefect-free core (:mod:`.stages`, :mod:`.runner`, :mod:`.ray_jobs`, :mod:`.errors`; content
identity in :mod:`mosear.identity`) plus the Prefect layer: the cached task (:mod:`.prefect_tasks`) and
the flows themselves (:mod:`.flows`, which ``flows/*.py`` import).
"""

from mosear.orchestrate.errors import BadInputError, StageError, TransientStageError, is_transient
from mosear.orchestrate.runner import StageOutcome, StageRequest, cache_key, run_stage
from mosear.orchestrate.stages import STAGES, StageSpec, get_stage, stage_available

__all__ = [
    "BadInputError", "StageError", "TransientStageError", "is_transient",
    "StageOutcome", "StageRequest", "cache_key", "run_stage",
    "STAGES", "StageSpec", "get_stage", "stage_available",
]
