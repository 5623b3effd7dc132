"""Fixtures for the mining tests: real shards of the sample corpus, written by the shard stage."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small frames keep the tests fast; BlazeFace still finds the faces at 112x112.
SHARD_OVERRIDES = {"num_frames": 6, "height": 112, "width": 112, "samples_per_shard": 8, "progress": False}


@pytest.fixture(scope="session")
def sample_shards(samples_dir: Path, tmp_path_factory, ray_local) -> Path:
    """Shards of the whole sample corpus (21 clips, 3 shards)."""
    from mosear.config import load_config
    from mosear.shards.config import ShardConfig
    from mosear.shards.run import run_shard

    out = tmp_path_factory.mktemp("mine_in") / "shards"
    cfg = load_config(ShardConfig, None, {"corpus": str(samples_dir / "corpus.yaml"), "output": str(out),
                                          **SHARD_OVERRIDES})
    res = run_shard(cfg)
    assert res.written == 21, res
    return out


@pytest.fixture(scope="session")
def real_samples(sample_shards: Path) -> list[dict]:
    """The first shard's samples in memory (8 real clips) for stage unit tests."""
    from mosear.shards.reader import iter_samples, list_shards

    return list(iter_samples(list_shards(sample_shards)[:1]))
