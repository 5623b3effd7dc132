"""Fixtures of the shard tests: small decode settings and one sharded copy of the sample corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small outputs keep the tests fast; the decode path (PyAV, both streams, resize) is the full one.
SMALL = {"num_frames": 4, "height": 32, "width": 48, "progress": False, "workers": 2}


def shard_cfg(samples_dir: Path, output: Path, **kw):
    from mosear.config import load_config
    from mosear.shards.config import ShardConfig

    return load_config(ShardConfig, overrides={"corpus": str(samples_dir / "corpus.yaml"), "output": str(output),
                                               **SMALL, **kw})


@pytest.fixture(scope="session")
def sample_shards(samples_dir, ray_local, tmp_path_factory):
    """The sample corpus sharded once per session (3 clips per shard -> 7 shards)."""
    from mosear.shards.run import run_shard

    out = tmp_path_factory.mktemp("sample_shards") / "shards"
    cfg = shard_cfg(samples_dir, out, samples_per_shard=3)
    result = run_shard(cfg)
    return cfg, result
