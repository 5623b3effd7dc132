"""A benchmark reads exactly the shard folders it names: a mined benchmark's natural and spliced clips are
both in the shard folder it was mined from, and nothing is looked up beside the mined folder (an old
output's ``run.json`` or ``spliced/`` folder is no dependency a cache key cannot see)."""

from __future__ import annotations

import json

import pytest

from mosear.evaluate.benchmark_files import load_benchmark
from mosear.evaluate.config import BenchmarkSpec


def _mined(tmp_path):
    shards, mined = tmp_path / "shards", tmp_path / "mined"
    shards.mkdir()
    (mined / "spliced").mkdir(parents=True)  # the layout before splicing moved to the shard stage
    (mined / "run.json").write_text(json.dumps({"config": {"shards": str(shards)}}))
    for subset in ("video_aligned", "audio_aligned", "consistent"):
        (mined / f"{subset}.json").write_text(json.dumps({"ravdess__a": {"reason": "x", "label": "sad"}}
                                                          if subset == "consistent" else {}))
    return shards, mined


@pytest.mark.parametrize("named", ["one", "list", "none"])
def test_shard_folders_are_what_the_benchmark_names(tmp_path, named):
    shards, mined = _mined(tmp_path)
    other = tmp_path / "more_shards"
    value = {"one": str(shards), "list": [str(shards), str(other)], "none": None}[named]
    spec = BenchmarkSpec(name="m", format="mined", path=str(mined), shards=value, split="all")
    want = {"one": [str(shards)], "list": [str(shards), str(other)], "none": []}[named]
    assert load_benchmark(spec).shard_dirs == want
