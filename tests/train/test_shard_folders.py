"""Training reads exactly the shard folders it names: a mined mix's natural and spliced clips are both in
the shard folder it was mined from; nothing is looked up beside the mix (no sibling ``run.json``)."""

from __future__ import annotations

import json

from mosear.config import load_config
from mosear.train.config import TrainConfig
from mosear.train.preflight import shard_folders


def test_the_named_shard_folders_and_nothing_else(tmp_path):
    shards, mined = tmp_path / "shards", tmp_path / "mined"
    shards.mkdir()
    (mined / "spliced").mkdir(parents=True)  # the layout before splicing moved to the shard stage
    (mined / "run.json").write_text(json.dumps({"config": {"shards": str(shards)}}))
    cfg = load_config(TrainConfig, overrides={"shards": [str(shards)], "mix": str(mined / "train_mix.parquet"),
                                              "output": str(tmp_path / "out")})
    assert shard_folders(cfg) == [str(shards)]
    two = load_config(TrainConfig, overrides={"shards": [str(shards), str(tmp_path / "b")], "output": str(tmp_path / "o")})
    assert shard_folders(two) == [str(shards), str(tmp_path / "b")]
