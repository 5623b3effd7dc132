"""``ShardIterableDataset``: a torch ``IterableDataset`` over committed shards (see :mod:`mosear.shards.reader`).

Kept apart from the reader so that reading or writing shards never imports torch (about 3 s of start-up
in every shard-stage process); ``from mosear.shards import ShardIterableDataset`` imports it on first use.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from mosear.shards.reader import iter_samples, list_shards

__all__ = ["ShardIterableDataset"]


class ShardIterableDataset(IterableDataset):
    """torch ``IterableDataset`` over shards; each (rank, worker) reads a disjoint subset of shards.

    ``shuffle_shards``: reshuffle the shard order each epoch with ``seed + epoch`` (call ``set_epoch``).
    ``transform``: applied to each sample dict (e.g. to tensors / a model's input format).
    ``to_tensors``: frames -> uint8 tensor [T, H, W, 3], audio -> float32 tensor [N].
    """

    def __init__(self, shards: Iterable[str | Path] | str | Path, shuffle_shards: bool = False, seed: int = 0,
                 transform: Callable[[dict], Any] | None = None, to_tensors: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        if isinstance(shards, (str, Path)):
            shards = list_shards(shards) if Path(shards).is_dir() else [Path(shards)]
        self.shards = [Path(s) for s in shards]
        self.shuffle_shards, self.seed, self.epoch = shuffle_shards, seed, 0
        self.transform, self.to_tensors = transform, to_tensors
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_shards(self) -> list[Path]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            else:
                rank, world = 0, 1
        shards = list(self.shards)
        if self.shuffle_shards:
            random.Random(self.seed + self.epoch).shuffle(shards)
        info = get_worker_info()
        n_workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        return shards[rank * n_workers + wid :: world * n_workers]

    def __iter__(self) -> Iterator[Any]:
        for sample in iter_samples(self._my_shards()):
            if self.to_tensors:
                sample["frames"] = torch.from_numpy(sample["frames"])
                sample["audio"] = torch.from_numpy(sample["audio"])
            yield self.transform(sample) if self.transform else sample
