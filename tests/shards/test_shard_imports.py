"""The shard stage's processes (the driver and every Ray worker) start without torch or Ray Data.

Importing torch costs ~3 s of CPU per process; it came in through ``mosear.shards.reader``'s torch
dataset, and Ray Data through the stage's old executor (docs/shard.md, profile).
"""

from __future__ import annotations

import os
import subprocess
import sys


def test_shard_stage_imports_neither_torch_nor_ray_data(repo_root):
    code = ("import sys, mosear.shards, mosear.shards.run, mosear.shards.reader, mosear.media.decode; "
            "print(sorted(m for m in ('torch', 'ray.data') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_torch_dataset_importable_from_the_package():
    from mosear.shards import ShardIterableDataset as a
    from mosear.shards.torch_dataset import ShardIterableDataset as c

    assert a is c
