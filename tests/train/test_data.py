"""The per-worker training streams: disjoint splits, exact resume positions, mix weighting."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mosear.shards.reader import iter_samples, list_shards
from mosear.train.data import StreamSpec, TrainSampleStream, load_mix, make_loader


def _keys(samples):
    return [s["key"] for s in samples]


def _take(spec, n, loader_workers, mix=None, batch=2):
    loader = make_loader(TrainSampleStream(spec, mix), batch, _keys, loader_workers)
    return list(itertools.islice(iter(loader), n))


@pytest.mark.parametrize("world,loader_workers", [(1, 0), (2, 0), (2, 2)])
def test_one_epoch_covers_every_sample_once(train_shards, world, loader_workers):
    shards = tuple(str(p) for p in list_shards(train_shards))
    all_keys = sorted(s["key"] for s in iter_samples(shards) if s["meta"].get("label"))
    seen = []
    streams = max(1, loader_workers)
    for rank in range(world):
        for s in range(streams):
            # Read stream s directly (as DataLoader process s would), one epoch.
            spec_s = StreamSpec(shards, rank, world, streams, seed=3, shuffle_buffer=4, rotation=s)
            for sample in TrainSampleStream(spec_s):
                if sample["_pos"][1] > 0:
                    break
                seen.append(sample["key"])
    assert sorted(seen) == all_keys  # disjoint and complete: no duplicates, no gaps


@pytest.mark.parametrize("loader_workers", [0, 2])
def test_resume_from_positions_continues_the_same_sequence(train_shards, loader_workers):
    shards = tuple(str(p) for p in list_shards(train_shards))
    streams = max(1, loader_workers)
    spec = StreamSpec(shards, 1, 2, streams, seed=0, shuffle_buffer=4)
    full = _take(spec, 14, loader_workers)  # crosses an epoch boundary (rank 1 holds ~10 samples)
    assert max(p[1] for _, pos in full for p in pos) >= 1
    for cut in (3, 5, 8):
        pos = [(0, 0)] * streams
        for _, p in full[:cut]:
            s, epoch, offset = p[-1]
            pos[s] = (epoch, offset)
        resumed = StreamSpec(shards, 1, 2, streams, seed=0, shuffle_buffer=4, start=tuple(pos), rotation=cut % streams)
        rest = _take(resumed, 14 - cut, loader_workers)
        assert [b for b, _ in rest] == [b for b, _ in full[cut:]], f"resume after {cut} batches diverged"


def test_mix_filters_weights_and_attaches_targets(train_shards, tmp_path):
    shards = tuple(str(p) for p in list_shards(train_shards))
    keys = sorted(s["key"] for s in iter_samples(shards))
    # three samples: weight 2 (always twice), 0 (never), 1.0 (once); the rest are not in the mix
    rows = {"key": keys[:3], "shard": ["x"] * 3, "subset": ["consistent"] * 3, "weight": [2.0, 0.0, 1.0],
            "target": ["angry: t0", "t1", "happy: t2"]}
    path = tmp_path / "train_mix.parquet"
    pq.write_table(pa.table(rows), path)
    mix = load_mix(str(path))
    # The stream is infinite: take exactly one epoch (3 yields) and check the next epoch starts.
    epoch0 = list(itertools.islice(TrainSampleStream(StreamSpec(shards, 0, 1, 1, seed=0, shuffle_buffer=0), mix), 4))
    assert [s["key"] for s in epoch0[:3]].count(keys[0]) == 2
    assert keys[1] not in [s["key"] for s in epoch0[:3]]
    assert epoch0[3]["_pos"][1] == 1
    assert {s["key"]: s["target"] for s in epoch0[:3]} == {keys[0]: "angry: t0", keys[2]: "happy: t2"}


def test_bad_mix_is_refused(tmp_path):
    path = tmp_path / "mix.parquet"
    pq.write_table(pa.table({"key": ["a"], "weight": [-1.0]}), path)
    with pytest.raises(ValueError, match="negative weight"):
        load_mix(str(path))
    pq.write_table(pa.table({"key": ["a"]}), path)
    with pytest.raises(ValueError, match="missing column"):
        load_mix(str(path))
