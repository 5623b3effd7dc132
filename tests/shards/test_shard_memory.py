"""Memory stays flat as the corpus grows: the worker holds one clip at a time (writer and reader)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Runs in a fresh process so that ru_maxrss is this job's peak alone.
SCRIPT = r"""
import json, resource, sys
from mosear.config import load_config
from mosear.shards.config import ShardConfig
from mosear.shards.plan import plan_corpus
from mosear.shards.reader import iter_samples, list_shards
from mosear.shards.run import build_shard

cfg = load_config(ShardConfig, overrides=json.loads(sys.argv[1]))
plan = plan_corpus(cfg)
for shard in plan.shards:
    build_shard(shard, cfg, cfg.output, cfg.shard_hash())
n = sum(1 for _ in iter_samples(list_shards(cfg.output)))
print(json.dumps({"samples": n, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _peak(samples_dir, repo_root, tmp_path, n: int) -> dict:
    root = tmp_path / f"corpus{n}"
    root.mkdir()
    clips = sorted((samples_dir / "ravdess").glob("*.mp4"))
    for i in range(n):
        os.symlink(clips[i % len(clips)], root / f"{i:04d}.mp4")
    (root / "m.csv").write_text("path\n" + "".join(f"{i:04d}.mp4\n" for i in range(n)))
    cfg = {"sources": [{"adapter": "generic", "root": str(root), "manifest": str(root / "m.csv")}],
           "output": str(tmp_path / f"out{n}"), "num_frames": 16, "height": 224, "width": 224,
           "samples_per_shard": 1000, "progress": False}  # one big shard: 2.4 MB of frames per sample
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cfg)], cwd=repo_root, check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(repo_root)))
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_flat(samples_dir, repo_root, tmp_path):
    small = _peak(samples_dir, repo_root, tmp_path, 6)
    big = _peak(samples_dir, repo_root, tmp_path, 42)
    assert small["samples"] == 6 and big["samples"] == 42
    growth_mb = (big["peak_kib"] - small["peak_kib"]) / 1024
    # holding the 36 extra samples would add ~90 MB of frames alone
    assert growth_mb < 25, f"peak RSS grew by {growth_mb:.1f} MB from 6 to 42 clips"


def test_decoding_leaves_no_frame_in_a_reference_cycle(samples_dir):
    """Reading a frame's display matrix must not tie the decoded picture into a reference cycle: such a
    frame outlives the clip until a full garbage collection (a shard worker grew ~10 MB per shard)."""
    import gc

    import av

    from mosear.media.decode import decode_clip

    clip = sorted((samples_dir / "ravdess").glob("*.mp4"))[0]
    decode_clip(clip, num_frames=4, height=32, width=32)  # imports and libav set-up out of the way
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        decode_clip(clip, num_frames=4, height=32, width=32)
        gc.collect()
        frames = [o for o in gc.garbage if isinstance(o, av.VideoFrame) and o.width * o.height > 4]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert frames == [], f"{len(frames)} decoded frame(s) left in reference cycles: {frames[:2]}"
