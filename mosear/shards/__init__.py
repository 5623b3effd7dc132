"""The shard stage: corpus -> decoded WebDataset shards (see docs/shard.md and docs/contracts.md)."""

from mosear.shards.config import ShardConfig, SourceConfig
from mosear.shards.reader import iter_samples, list_shards
from mosear.shards.writer import ShardSample, ShardWriter

__all__ = ["ShardConfig", "SourceConfig", "ShardIterableDataset", "iter_samples", "list_shards",
           "ShardSample", "ShardWriter", "run_shard", "ShardResult"]


def __getattr__(name):  # run_shard pulls in Ray, ShardIterableDataset torch: import them lazily
    if name == "ShardIterableDataset":
        from mosear.shards.torch_dataset import ShardIterableDataset

        return ShardIterableDataset
    if name in ("run_shard", "ShardResult"):
        from mosear.shards import run

        return getattr(run, name)
    raise AttributeError(name)
