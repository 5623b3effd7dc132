"""A mined benchmark's samples live in its input shards AND its own spliced/ shards; training and
evaluation must look in both, also when the input shard folder is given explicitly (as the pipeline does)."""

from __future__ import annotations

import json

from mosear.evaluate.benchmark_files import load_benchmark
from mosear.evaluate.config import BenchmarkSpec
from mosear.mine.layout import mined_shard_dirs


def _mined(tmp_path):
    shards, mined = tmp_path / "shards", tmp_path / "mined"
    shards.mkdir()
    (mined / "spliced").mkdir(parents=True)
    (mined / "run.json").write_text(json.dumps({"config": {"shards": str(shards)}}))
    for subset in ("video_aligned", "audio_aligned", "consistent"):
        (mined / f"{subset}.json").write_text(json.dumps({"ravdess__a": {"reason": "x", "label": "sad"}}
                                                          if subset == "consistent" else {}))
    return shards, mined


def test_mined_dirs_are_input_then_spliced(tmp_path):
    shards, mined = _mined(tmp_path)
    assert mined_shard_dirs(mined) == [str(shards), str(mined / "spliced")]
    assert mined_shard_dirs(tmp_path / "absent") == []


def test_explicit_shards_keep_the_spliced_folder(tmp_path):
    shards, mined = _mined(tmp_path)
    spec = BenchmarkSpec(name="m", format="mined", path=str(mined), shards=str(shards), split="all")
    assert load_benchmark(spec).shard_dirs == [str(shards), str(mined / "spliced")]


def test_a_split_folder_draws_on_the_whole_outputs_shards(tmp_path):
    """``mined/test`` (the CA-MER release layout, one folder per split) finds its media where the whole
    output's are: its input shards and ``spliced/``."""
    shards, mined = _mined(tmp_path)
    (mined / "test").mkdir()
    assert mined_shard_dirs(mined / "test") == [str(shards), str(mined / "spliced")]
