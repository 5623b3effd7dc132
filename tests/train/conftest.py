"""Fixtures for the training tests: one small real shard folder, built once per session.

The shards come from the committed sample corpus (datasets/samples, real RAVDESS / CREMA-D clips)
through the real shard stage, at 4 frames of 32x32 so the tiny model trains in seconds; 6 samples per
shard gives 4 shards, enough to split over 2 workers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_shards import make_tiny_shards


@pytest.fixture(scope="session")
def train_shards(ray_local, samples_dir, tmp_path_factory) -> Path:
    return make_tiny_shards(tmp_path_factory.mktemp("train-shards") / "shards", samples_dir, samples_per_shard=6)
