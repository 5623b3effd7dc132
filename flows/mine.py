"""Prefect deployment entrypoint: ``mosear mine`` (shards -> conflicts.parquet, CA-MER-style subsets, training mix).

The flow lives in the installed package (:mod:`mosear.orchestrate.flows`); this file only names it for
``flows/prefect.yaml`` (``entrypoint: flows/mine.py:mine``). Run it: ``python flows/mine.py``.
"""

from mosear.orchestrate.flows import mine

__all__ = ["mine"]

if __name__ == "__main__":
    mine()
