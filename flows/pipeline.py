"""Prefect deployment entrypoint: the whole pipeline, shard -> mine -> train -> eval.

The flow lives in the installed package (:mod:`mosear.orchestrate.flows`); this file only names it for
``flows/prefect.yaml`` (``entrypoint: flows/pipeline.py:pipeline``). Run it: ``python flows/pipeline.py``.
"""

from mosear.orchestrate.flows import pipeline

__all__ = ["pipeline"]

if __name__ == "__main__":
    pipeline()
