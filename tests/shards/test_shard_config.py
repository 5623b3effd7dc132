"""ShardConfig: corpus file or folder, validation before work, what the hash covers."""

from __future__ import annotations

import pytest

from mosear.config import ConfigError, load_config
from mosear.shards.config import ShardConfig


def _cfg(**kw) -> ShardConfig:
    return load_config(ShardConfig, overrides=kw)


def test_corpus_file_folder_and_plain_folder(samples_dir):
    by_file = _cfg(corpus=str(samples_dir / "corpus.yaml"))
    by_folder = _cfg(corpus=str(samples_dir))
    assert [s.adapter for s in by_file.sources] == ["ravdess", "crema_d"]  # corpus.yaml: RAVDESS + CREMA-D 1001
    assert by_folder.shard_hash() == by_file.shard_hash()
    plain = _cfg(corpus=str(samples_dir / "ravdess"))  # no corpus.yaml: every video, generic adapter
    assert [(s.adapter, s.root_path()) for s in plain.sources] == [("generic", samples_dir / "ravdess")]


def test_hash_ignores_how_not_what(samples_dir):
    base = _cfg(corpus=str(samples_dir))
    assert _cfg(corpus=str(samples_dir), workers=7, progress=False, decode_threads=0,
                output="elsewhere").shard_hash() == base.shard_hash()
    for change in ({"num_frames": 8}, {"resize": "pad"}, {"missing_audio": "silence"}, {"samples_per_shard": 3}):
        assert _cfg(corpus=str(samples_dir), **change).shard_hash() != base.shard_hash(), change


@pytest.mark.parametrize("kw,field", [
    ({"corpus": "no/such/corpus.yaml"}, "corpus"),
    ({"sources": [{"adapter": "ravdess", "root": "x", "colour": "red"}]}, "colour"),
    ({"sources": [{"adapter": "generic", "root": "x", "dataset": "a.b"}]}, "dataset"),
    ({"sources": [{"adapter": "generic", "root": "x"}], "height": 2}, "height"),
    ({"sources": [{"adapter": "generic", "root": "x"}], "target_shard_mb": 0}, "target_shard_mb"),
])
def test_bad_fields_are_named(kw, field):
    with pytest.raises(ConfigError, match=field):
        _cfg(**kw)


def test_shard_size_from_byte_target(samples_dir):
    cfg = _cfg(corpus=str(samples_dir), target_shard_mb=10, samples_per_shard=1000)
    per = cfg.planned_samples_per_shard()  # 16x224x224x3 = 2.4 MB frames + 10 s of 16-bit audio
    assert per == 3
    assert _cfg(corpus=str(samples_dir), samples_per_shard=2).planned_samples_per_shard() == 2


@pytest.mark.parametrize("workers, cpus, expected", [
    (2, 2, 4),    # every CPU: one more task per worker waits in Ray's queue
    (4, 2, 6),    # more workers than CPUs: Ray still runs 2; the queue holds one per CPU
    (1, 2, 1),    # fewer workers than CPUs: exactly `workers` submitted, or Ray would run more
    (3, 8, 3),
])
def test_tasks_in_flight_never_exceed_workers_running(workers, cpus, expected):
    from mosear.shards.run import _in_flight

    assert _in_flight(workers, cpus) == expected
