"""Helpers shared by the shard tests (a module with a unique name, importable from this folder)."""

from __future__ import annotations

from pathlib import Path

# Small outputs keep the tests fast; the decode path (PyAV, both streams, resize) is the full one.
SMALL = {"num_frames": 4, "height": 32, "width": 48, "progress": False, "workers": 2}


def shard_cfg(samples_dir: Path, output: Path, **kw):
    """A ShardConfig over the sample corpus with the small test settings."""
    from mosear.config import load_config
    from mosear.shards.config import ShardConfig

    return load_config(ShardConfig, overrides={"corpus": str(samples_dir / "corpus.yaml"), "output": str(output),
                                               **SMALL, **kw})
