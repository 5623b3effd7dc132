"""The sample corpus sharded at the tiny model's input size, for the training and evaluation tests."""

from __future__ import annotations

from pathlib import Path


def make_tiny_shards(out: Path, samples_dir: Path, samples_per_shard: int) -> Path:
    """Shard the sample corpus at the tiny model's input size (4 frames of 32x32) into ``out``."""
    from mosear.config import load_config
    from mosear.shards import run_shard
    from mosear.shards.config import ShardConfig

    cfg = load_config(ShardConfig, overrides={
        "corpus": str(samples_dir / "corpus.yaml"), "output": str(out), "num_frames": 4, "height": 32,
        "width": 32, "samples_per_shard": samples_per_shard, "progress": False,
    })
    run_shard(cfg)
    return out
