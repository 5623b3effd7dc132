"""A mined mix names spliced clips too: training reads the mined folder's spliced shards as well."""

from __future__ import annotations

import json

from mosear.config import load_config
from mosear.train.config import TrainConfig
from mosear.train.preflight import shard_folders


def test_mix_brings_its_spliced_shards(tmp_path):
    shards, mined = tmp_path / "shards", tmp_path / "mined"
    shards.mkdir()
    (mined / "spliced").mkdir(parents=True)
    (mined / "run.json").write_text(json.dumps({"config": {"shards": str(shards)}}))
    cfg = load_config(TrainConfig, overrides={"shards": [str(shards)], "mix": str(mined / "train_mix.parquet"),
                                              "output": str(tmp_path / "out")})
    assert shard_folders(cfg) == [str(shards), str(mined / "spliced")]  # input not repeated
    plain = load_config(TrainConfig, overrides={"shards": [str(shards)], "output": str(tmp_path / "out")})
    assert shard_folders(plain) == [str(shards)]
