"""Prefect deployment entrypoint: ``mosear train`` (shards + mined training mix -> adapter checkpoint).

The flow lives in the installed package (:mod:`mosear.orchestrate.flows`); this file only names it for
``flows/prefect.yaml`` (``entrypoint: flows/train.py:train``). Run it: ``python flows/train.py``.
"""

from mosear.orchestrate.flows import train

__all__ = ["train"]

if __name__ == "__main__":
    train()
