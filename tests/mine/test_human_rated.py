"""Human-rated mining: CREMA-D-style per-modality votes in the metadata decide the subset."""

from __future__ import annotations

import json

import pandas as pd

from mosear.config import load_config
from mosear.mine.assemble import assemble
from mosear.mine.config import MineConfig
from mosear.mine.stage_pipeline import StagePipeline
from mosear.mine.worker import mine_shard

# (audio votes, visual votes) as the shard stage stores CREMA-D's tabulated votes, and the subset they give
RATINGS = {
    "consistent": (["angry", "angry", "angry", "neutral"], ["angry", "angry", "angry"]),
    "video_aligned": (["neutral", "neutral", "neutral", "angry"], ["angry", "angry", "disgust"]),
    "audio_aligned": (["angry", "angry", "angry"], ["happy", "happy", "happy", "angry"]),
    "ambiguous": (["angry", "neutral"], ["angry", "happy"]),
}


def test_ratings_decide_subsets_in_mined_output(real_samples, tmp_path):
    from mosear.shards.writer import ShardSample, ShardWriter

    base = real_samples[0]
    with ShardWriter(tmp_path / "shards", "train", 0, "rated") as w:
        for subset, (audio, visual) in RATINGS.items():
            meta = dict(base["meta"], key=f"rated__{subset}", label="angry",
                        extra={"ratings": {"audio": {"votes": audio, "levels": None},
                                           "visual": {"votes": visual, "levels": None}}})
            w.write(ShardSample(f"rated__{subset}", base["frames"], base["audio"], 16000, meta))
    cfg = load_config(MineConfig, None, {"output": str(tmp_path / "mined"), "stages": ["signal_quality"],
                                         "margin": 0.1, "progress": False})
    stats = mine_shard(tmp_path / "shards" / "train-000000.tar", cfg.output,
                       StagePipeline.from_spec(cfg.stages), batch_size=2, config_hash=cfg.stage_hash())
    assert stats["status"] == "ok" and stats["samples_out"] == 4
    summary = assemble(cfg, StagePipeline.from_spec(cfg.stages))
    df = pd.read_parquet(tmp_path / "mined" / "conflicts.parquet").set_index("key")
    for subset in RATINGS:
        assert df.loc[f"rated__{subset}", "subset"] == subset
        assert df.loc[f"rated__{subset}", "origin"] == "human-rated"
    assert summary["subsets_by_origin"]["human-rated"]["video_aligned"] == 1
    assert set(json.loads((tmp_path / "mined" / "video_aligned.json").read_text())) == {"rated__video_aligned"}
