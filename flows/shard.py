"""Prefect deployment entrypoint: ``mosear shard`` (corpus -> WebDataset shards).

The flow lives in the installed package (:mod:`mosear.orchestrate.flows`); this file only names it for
``flows/prefect.yaml`` (``entrypoint: flows/shard.py:shard``). Run it: ``python flows/shard.py``.
"""

from mosear.orchestrate.flows import shard

__all__ = ["shard"]

if __name__ == "__main__":
    shard()
