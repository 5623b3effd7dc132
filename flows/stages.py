"""Prefect deployment entrypoints of the four stage flows: ``flows/stages.py:shard`` (``mine``,
``train``, ``eval``), one per stage of the registry (``mosear.orchestrate.registry``).

The flows live in the installed package (:data:`mosear.orchestrate.flows.STAGE_FLOWS`, all made by
one factory); this file only names them for ``flows/prefect.yaml``.
"""

from mosear.orchestrate.flows import STAGE_FLOWS

globals().update(STAGE_FLOWS)  # shard, mine, train, eval
__all__ = list(STAGE_FLOWS)
