"""Prefect deployment entrypoint of the whole pipeline, shard -> mine -> train -> eval.

The flow lives in the installed package (:func:`mosear.orchestrate.flows.pipeline`); this file only
names it for ``flows/prefect.yaml`` (``entrypoint: flows/pipeline.py:pipeline``).
"""

from mosear.orchestrate.flows import pipeline

__all__ = ["pipeline"]
