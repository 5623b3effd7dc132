"""Fixtures for the training tests: one small real shard folder, built once per session.

The shards come from the committed sample corpus (datasets/samples, real RAVDESS / CREMA-D clips)
through the real shard stage, at 4 frames of 32x32 so the tiny model trains in seconds; 6 samples per
shard gives 4 shards, enough to split over 2 workers.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def train_shards(ray_local, samples_dir, tmp_path_factory) -> Path:
    from mosear.config import load_config
    from mosear.shards import run_shard
    from mosear.shards.config import ShardConfig

    out = tmp_path_factory.mktemp("train-shards") / "shards"
    cfg = load_config(ShardConfig, overrides={
        "corpus": str(samples_dir / "corpus.yaml"), "output": str(out), "num_frames": 4, "height": 32,
        "width": 32, "samples_per_shard": 6, "progress": False,
    })
    run_shard(cfg)
    return out
