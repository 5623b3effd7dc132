"""Fixtures of the shard tests: one sharded copy of the sample corpus per session."""

from __future__ import annotations

import pytest

from shard_helpers import shard_cfg


@pytest.fixture(scope="session")
def sample_shards(samples_dir, ray_local, tmp_path_factory):
    """The sample corpus sharded once per session (3 clips per shard -> 7 shards)."""
    from mosear.shards.run import run_shard

    out = tmp_path_factory.mktemp("sample_shards") / "shards"
    cfg = shard_cfg(samples_dir, out, samples_per_shard=3)
    result = run_shard(cfg)
    return cfg, result
