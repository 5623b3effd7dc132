"""Read committed shards back: sample dicts ready for torch.

``list_shards(dir)`` lists the tars whose stats JSON exists (committed shards only), sorted;
``iter_samples(shards)`` streams samples as
``{"key": str, "frames": uint8 [T, H, W, 3], "audio": float32 [N] in [-1, 1], "sample_rate": int,
"meta": dict}`` plus any extra members under their extension (e.g. ``"mp4": bytes``);
``ShardIterableDataset`` is a torch ``IterableDataset`` over them that splits shards by distributed
rank and by DataLoader worker. Tars are read as a stream (``tarfile`` "r|"): one sample in memory.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
import wave
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

__all__ = ["list_shards", "iter_samples", "ShardIterableDataset", "read_stats", "decode_wav"]


def read_stats(tar: str | Path) -> dict[str, Any] | None:
    """The stats JSON (commit marker) of a shard, or None when the shard is not committed."""
    tar = Path(tar)
    stats = tar.with_name(tar.name[: -len(".tar")] + ".stats.json")
    if not stats.is_file():
        return None
    return json.loads(stats.read_text())


def list_shards(directory: str | Path, split: str | None = None, config_hash: str | None = None) -> list[Path]:
    """Committed shards of ``directory`` (tar + stats JSON), sorted; optionally one split / config."""
    d = Path(directory)
    out = []
    for tar in sorted(d.glob("*.tar")):
        stats = read_stats(tar)
        if stats is None:
            continue
        if split is not None and stats.get("split") != split:
            continue
        if config_hash is not None and stats.get("config_hash") != config_hash:
            raise ValueError(f"{tar.name} was written by config {stats.get('config_hash')}, expected {config_hash}")
        out.append(tar)
    return out


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono 16-bit WAV bytes -> (float32 [N] in [-1, 1], sample rate)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        rate, ch = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if ch > 1:
        pcm = pcm.reshape(-1, ch).mean(axis=1)
    return (pcm.astype(np.float32) / 32768.0), rate


def _decode(key: str, members: dict[str, bytes]) -> dict[str, Any]:
    sample: dict[str, Any] = {"key": key}
    for ext, data in members.items():
        if ext == "frames.npy":
            sample["frames"] = np.load(io.BytesIO(data), allow_pickle=False)
        elif ext == "wav":
            sample["audio"], sample["sample_rate"] = decode_wav(data)
        elif ext == "json":
            sample["meta"] = json.loads(data)
        else:
            sample[ext] = data
    return sample


def _iter_tar(path: Path) -> Iterator[dict[str, Any]]:
    key, members = None, {}
    with tarfile.open(path, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            k, _, ext = base.partition(".")
            if k != key:
                if key is not None:
                    yield _decode(key, members)
                key, members = k, {}
            members[ext] = tar.extractfile(info).read()
    if key is not None:
        yield _decode(key, members)


def iter_samples(shards: Iterable[str | Path] | str | Path) -> Iterator[dict[str, Any]]:
    """Samples of ``shards`` (a list of tars, or a shard folder) in order."""
    if isinstance(shards, (str, Path)) and Path(shards).is_dir():
        shards = list_shards(shards)
    elif isinstance(shards, (str, Path)):
        shards = [shards]
    for tar in shards:
        yield from _iter_tar(Path(tar))


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
