"""Per-worker sample streams for training: shard splitting, mix weighting, shuffling, exact resume.

Streaming, WebDataset-style: every training worker (Ray Train rank ``r`` of ``R``) runs ``L`` loader
streams (its torch DataLoader processes, at least one); stream ``g = r * L + s`` of ``G = R * L``
reads only its share of the shards through :func:`mosear.shards.reader.iter_samples`. No process ever
holds more than ``shuffle_buffer`` samples.

Per epoch ``e`` (each stream is infinite and counts its own epochs):
- the shard list is permuted with ``rng(seed, e)``; stream ``g`` takes shards ``order[g::G]``. With
  fewer shards than streams, streams share shards and split them by sample index (``i % c == j``),
  so every stream gets data;
- without a mix, the target text is ``target_template`` filled from the metadata (``{label}``);
  samples without a canonical label are skipped;
- with a mined mix (``train_mix.parquet``) a sample not in the mix is skipped and a kept sample is
  yielded ``floor(w) + Bernoulli(w - floor(w))`` times (``w`` its weight; the draw is seeded by
  ``(seed, e, key)``), its ``target`` attached: conflict-balanced sampling without a global index;
- a shuffle buffer of ``shuffle_buffer`` samples, seeded by ``(seed, e, g)``.

Data position: each yielded sample carries ``(stream, epoch, offset)``; a checkpoint records the last
position of every stream and how many micro-batches the rank consumed. On resume a stream restarts
at its epoch and replays ``offset`` samples without yielding them (shards hold decoded arrays, so the
replay is reading, not decoding), and the torch DataLoader's round-robin over its processes is
rotated so the next batch comes from the stream that was next. The result is the same sample
sequence as an uninterrupted run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

__all__ = ["load_mix", "StreamSpec", "TrainSampleStream", "collate_with_positions", "POS_KEY"]

POS_KEY = "_pos"  # (stream, epoch, offset) of a sample; stripped before the model's collate


def load_mix(path: str) -> dict[str, tuple[float, str | None]]:
    """``key -> (weight, target)`` from a mined ``train_mix.parquet`` (a manifest, not the corpus)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=None)
    cols = set(table.column_names)
    missing = {"key", "weight"} - cols
    if missing:
        raise ValueError(f"mix {path}: missing column(s) {sorted(missing)} (need key, shard, subset, weight, target)")
    keys = table.column("key").to_pylist()
    weights = table.column("weight").to_pylist()
    targets = table.column("target").to_pylist() if "target" in cols else [None] * len(keys)
    bad = [k for k, w in zip(keys, weights) if w is None or not np.isfinite(w) or w < 0]
    if bad:
        raise ValueError(f"mix {path}: {len(bad)} row(s) with a missing or negative weight, e.g. {bad[:3]}")
    return {k: (float(w), t) for k, w, t in zip(keys, weights, targets)}


@dataclass(frozen=True)
class StreamSpec:
    """Which slice of the data one rank reads and where it resumes."""

    shards: tuple[str, ...]
    rank: int
    world_size: int
    loader_streams: int  # = max(1, DataLoader num_workers)
    seed: int
    shuffle_buffer: int
    target_template: str = "{label}"
    target: str = "mix"  # with a mix: "mix" (its target) or "template" (target_template from the metadata)
    # resume: per local stream s -> (epoch, offset); rotation = micro-batches consumed % loader_streams
    start: tuple[tuple[int, int], ...] | None = None
    rotation: int = 0


def _stream_shards(shards: tuple[str, ...], seed: int, epoch: int, g: int, G: int) -> tuple[list[str], int, int]:
    """Shards of global stream ``g`` in ``epoch`` and its sample split ``(count, index)``."""
    order = [shards[i] for i in np.random.default_rng([seed, epoch]).permutation(len(shards))]
    n = len(order)
    if n >= G:
        return order[g::G], 1, 0
    # Fewer shards than streams: stream g reads shard g % n and keeps every c-th sample.
    peers = [h for h in range(G) if h % n == g % n]
    return [order[g % n]], len(peers), peers.index(g)


class TrainSampleStream(IterableDataset):
    """Infinite stream of training samples for one rank (and, inside it, one DataLoader process)."""

    def __init__(self, spec: StreamSpec, mix: dict[str, tuple[float, str | None]] | None = None,
                 features: dict[str, dict[str, Any]] | None = None):
        super().__init__()
        if not spec.shards:
            raise ValueError("no shards to train on")
        self.spec = spec
        self.mix = mix
        self.features = features  # key -> {"visual", "audio"} (model.inputs=features); others skipped

    def _template(self, sample: dict[str, Any]) -> str | None:
        meta = sample.get("meta") or {}
        if meta.get("label") is None:
            return None
        return self.spec.target_template.format(label=meta["label"], **{k: v for k, v in meta.items() if k != "label"})

    def _weighted(self, samples: Iterator[dict[str, Any]], epoch: int) -> Iterator[dict[str, Any]]:
        for sample in samples:
            if self.features is not None:
                feats = self.features.get(sample["key"])
                if feats is None:  # preflight counted these; no features, nothing to feed the projectors
                    continue
                sample = {**sample, "features": feats}
            if self.mix is None:
                # Without a mined mix the target is built from the canonical label; unlabelled clips
                # cannot be trained on and are skipped (the shard index lists them).
                label = (sample.get("meta") or {}).get("label")
                if label is None:
                    continue
                yield {**sample, "target": self.spec.target_template.format(label=label, **{
                    k: v for k, v in (sample.get("meta") or {}).items() if k != "label"})}
                continue
            entry = self.mix.get(sample["key"])
            if entry is None:
                continue
            weight, target = entry
            if self.spec.target == "template":
                target = self._template(sample)
                if target is None:
                    continue
            whole = int(weight)
            u = np.random.default_rng([self.spec.seed, epoch, zlib.crc32(sample["key"].encode())]).random()
            if target is not None:
                sample = {**sample, "target": target}
            for _ in range(whole + int(u < weight - whole)):
                yield sample

    def _epoch(self, g: int, G: int, epoch: int) -> Iterator[dict[str, Any]]:
        from mosear.shards.reader import iter_samples

        shards, count, index = _stream_shards(self.spec.shards, self.spec.seed, epoch, g, G)
        raw = iter_samples([Path(s) if "://" not in s else s for s in shards])
        if count > 1:
            raw = (s for i, s in enumerate(raw) if i % count == index)
        items = self._weighted(raw, epoch)
        size = self.spec.shuffle_buffer
        if size <= 1:
            yield from items
            return
        rng = np.random.default_rng([self.spec.seed, epoch, g, 7])
        buf: list[dict[str, Any]] = []
        for item in items:
            if len(buf) < size:
                buf.append(item)
                continue
            j = int(rng.integers(size))
            yield buf[j]
            buf[j] = item
        rng.shuffle(buf)
        yield from buf

    def __iter__(self) -> Iterator[dict[str, Any]]:
        spec = self.spec
        info = get_worker_info()
        worker = info.id if info is not None else 0
        # The DataLoader asks process 0 first on every new iterator; rotating makes process 0 play the
        # stream whose batch was next when the checkpoint was taken.
        s = (worker + spec.rotation) % spec.loader_streams
        G = spec.world_size * spec.loader_streams
        g = spec.rank * spec.loader_streams + s
        epoch, skip = spec.start[s] if spec.start else (0, 0)
        while True:
            offset = 0
            for sample in self._epoch(g, G, epoch):
                offset += 1
                if offset <= skip:
                    continue
                yield {**sample, POS_KEY: (s, epoch, offset)}
            if offset == 0:
                raise RuntimeError(
                    f"training stream {g} (rank {spec.rank}) got no samples in epoch {epoch}: its shards "
                    f"{_stream_shards(spec.shards, spec.seed, epoch, g, G)[0]} hold no sample"
                    + (" of the mix" if self.mix is not None else "")
                )
            epoch, skip = epoch + 1, 0


def collate_with_positions(collate_fn):
    """Wrap the model's ``collate(samples)``: strip positions, return ``(batch, positions)``."""

    def fn(samples: list[dict[str, Any]]):
        positions = [s[POS_KEY] for s in samples]
        batch = collate_fn([{k: v for k, v in s.items() if k != POS_KEY} for s in samples])
        return batch, positions

    return fn


def make_loader(stream: TrainSampleStream, batch_size: int, collate_fn, num_workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over the rank's stream; batches never mix samples of two loader processes."""
    return torch.utils.data.DataLoader(
        stream, batch_size=batch_size, collate_fn=collate_with_positions(collate_fn),
        num_workers=num_workers, persistent_workers=False, prefetch_factor=4 if num_workers else None,
    )
