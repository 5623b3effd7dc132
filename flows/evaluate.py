"""Prefect deployment entrypoint: ``mosear eval`` (checkpoints x benchmarks x settings -> metrics, HTML report).

The flow lives in the installed package (:mod:`mosear.orchestrate.flows`); this file only names it for
``flows/prefect.yaml`` (``entrypoint: flows/evaluate.py:evaluate``). Run it: ``python flows/evaluate.py``.
"""

from mosear.orchestrate.flows import evaluate

__all__ = ["evaluate"]

if __name__ == "__main__":
    evaluate()
