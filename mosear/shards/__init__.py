"""The shard stage: corpus -> decoded WebDataset shards (see docs/shard.md and docs/contracts.md)."""

from mosear.shards.config import ShardConfig, SourceConfig
from mosear.shards.reader import ShardIterableDataset, iter_samples, list_shards
from mosear.shards.writer import ShardSample, ShardWriter

__all__ = ["ShardConfig", "SourceConfig", "ShardIterableDataset", "iter_samples", "list_shards",
           "ShardSample", "ShardWriter", "run_shard", "ShardResult"]


def __getattr__(name):  # run_shard pulls in Ray; import it lazily
    if name in ("run_shard", "ShardResult"):
        from mosear.shards import run

        return getattr(run, name)
    raise AttributeError(name)
