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
    """Catches: per-modality ratings not deciding the subset; a rated item with a truth whose cues decided no
    subset left out of ``ambiguous.json`` (eval could not score it), or a tied audio-visual vote (no truth,
    the acted label kept) exported there as if it had one."""
    from mosear.shards.writer import ShardSample, ShardWriter

    base = real_samples[0]
    with ShardWriter(tmp_path / "shards", "train", 0, "rated") as w:
        for subset, (audio, visual) in RATINGS.items():
            meta = dict(base["meta"], key=f"rated__{subset}", label="angry",
                        extra={"ratings": {"audio": {"votes": audio, "levels": None},
                                           "visual": {"votes": visual, "levels": None}}})
            w.write(ShardSample(f"rated__{subset}", base["frames"], base["audio"], 16000, meta))
        tied = {"audio": {"votes": ["angry"] * 3}, "visual": {"votes": ["happy"] * 3},
                "audio_visual": {"votes": ["angry", "happy"]}}  # no truth: the AV vote is tied
        w.write(ShardSample("rated__av_tie", base["frames"], base["audio"], 16000,
                            dict(base["meta"], key="rated__av_tie", label="angry", extra={"ratings": tied})))
    cfg = load_config(MineConfig, None, {"output": str(tmp_path / "mined"), "stages": ["signal_quality"],
                                         "margin": 0.1, "progress": False})
    stats = mine_shard(tmp_path / "shards" / "train-000000.tar", cfg.output,
                       StagePipeline.from_spec(cfg.stages), batch_size=2, config_hash=cfg.stage_hash())
    assert stats["status"] == "ok" and stats["samples_out"] == 5
    summary = assemble(cfg, StagePipeline.from_spec(cfg.stages))
    df = pd.read_parquet(tmp_path / "mined" / "conflicts.parquet").set_index("key")
    for subset in RATINGS:
        assert df.loc[f"rated__{subset}", "subset"] == subset
        assert df.loc[f"rated__{subset}", "origin"] == "human-rated"
    assert summary["subsets_by_origin"]["human-rated"]["video_aligned"] == 1
    assert set(json.loads((tmp_path / "mined" / "video_aligned.json").read_text())) == {"rated__video_aligned"}
    assert df.loc["rated__av_tie", "subset"] == "ambiguous" and df.loc["rated__av_tie", "rating_ties"] == "audio_visual"
    ambiguous = json.loads((tmp_path / "mined" / "ambiguous.json").read_text())
    assert set(ambiguous) == {"rated__ambiguous"} and ambiguous["rated__ambiguous"]["label"] == "angry"
    split = df.loc["rated__ambiguous", "split"]
    if split != "unassigned":
        assert set(json.loads((tmp_path / "mined" / split / "ambiguous.json").read_text())) == {"rated__ambiguous"}


SAMPLE_TABLE = "processedResults/summaryTable.csv"


def test_sample_ratings_make_the_audio_visual_vote_the_truth(samples_dir):
    """Catches: human-rated conflicts scored against the acted label instead of what people perceived
    from face and voice together, or a face/voice disagreement not turned into an aligned subset. Real
    rows of CREMA-D's summaryTable.csv (the sample keeps 1001's and 1002's)."""
    from mosear.adapters.crema_d import load_ratings
    from mosear.mine.subsets import human_rated_subset

    ratings = load_ratings(samples_dir / SAMPLE_TABLE)
    assert len(ratings) == 12 and all(set(r) == {"audio", "visual", "audio_visual"} for r in ratings.values())
    got = {name: human_rated_subset(name.split("_")[2], ratings[name])[::2] for name in ratings if name.startswith("1001")}
    assert got == {
        "1001_DFA_HAP_XX": ("video_aligned", "happy"),    # face H, voice N, both H
        "1001_DFA_FEA_XX": ("audio_aligned", "fear"),     # voice F, face D, both F
        "1001_DFA_DIS_XX": ("audio_aligned", "disgust"),  # voice D, face A, both D
        "1001_DFA_ANG_XX": ("consistent", "angry"),
        "1001_DFA_NEU_XX": ("consistent", "neutral"),
        "1001_DFA_SAD_XX": ("consistent", "neutral"),     # acted sad, perceived neutral by every condition
    }


def test_a_tied_vote_is_an_unsure_cue_and_is_counted(samples_dir):
    """Catches: summaryTable's tie 'N:S' read as one winner (its first letter) or dropped silently. The
    sample's real 1002_DFA_SAD_XX row has a tied face vote."""
    from mosear.adapters.crema_d import load_ratings
    from mosear.mine.subsets import human_rated_subset

    row = load_ratings(samples_dir / SAMPLE_TABLE)["1002_DFA_SAD_XX"]
    assert row["visual"]["votes"] == ["neutral", "sad"]
    subset, _, label, ties = human_rated_subset("sad", row)
    assert subset == "ambiguous" and label == "neutral" and ties == {"audio": False, "visual": True, "audio_visual": False}
    av_tie = {**row, "audio_visual": {"votes": ["neutral", "sad"], "levels": None}}
    assert human_rated_subset("sad", av_tie)[::2] == ("ambiguous", "sad")  # no truth: acted label kept


def test_unknown_names_and_unrated_clips_are_counted_by_the_adapter(samples_dir, tmp_path):
    """Catches: a ratings row naming no CREMA-D clip, or a clip the ratings do not name, vanishing
    without a count (the mining summary turns both into warnings)."""
    import shutil

    from mosear.adapters.crema_d import CremaDAdapter
    from mosear.adapters.source import SourceConfig

    root = tmp_path / "clips"
    root.mkdir()
    for name in ("1001_DFA_HAP_XX", "1001_DFA_FEA_XX"):
        shutil.copy(samples_dir / "crema_d" / f"{name}.flv", root / f"{name}.flv")
    lines = (samples_dir / SAMPLE_TABLE).read_text().splitlines()
    keep = [ln for ln in lines[1:] if "1001_DFA_HAP_XX" in ln] + ['"9","not a clip","N","1","N","1","N","1"']
    (tmp_path / "processedResults").mkdir()
    (tmp_path / "processedResults" / "summaryTable.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    src = SourceConfig(adapter="crema_d", root=str(root))
    recs = {r.clip_id: r for r in CremaDAdapter().clips(root, src)}
    assert "ratings" in recs["1001_DFA_HAP_XX"].extra and recs["1001_DFA_FEA_XX"].extra["ratings_missing"] is True
    assert {r.extra["ratings_unknown_names"] for r in recs.values()} == {1}


def test_ties_and_unrated_clips_are_counted_in_the_summary_block():
    """Catches: rows without a tie counted as tied (an empty tie list stored as '' rather than null), or
    ties / unrated clips / unknown ratings names missing from summary.json's human_rated block."""
    from mosear.mine.summary import human_rated_counts

    df = pd.DataFrame({"origin": ["human-rated", "human-rated", "human-rated", "natural"],
                       "subset": ["consistent", "ambiguous", "ambiguous", "consistent"],
                       "rating_ties": [None, "visual", "audio,audio_visual", None],
                       "unrated": [False, False, False, True], "ratings_unknown_names": [2, 2, 2, 2]})
    hr = human_rated_counts(df)
    assert hr["items"] == 3 and hr["rows_with_a_tie"] == 2
    assert hr["ties_by_modality"] == {"audio": 1, "visual": 1, "audio_visual": 1}
    assert hr["unrated_clips"] == 1 and hr["ratings_rows_unknown_names"] == 2 and "unsure" in hr["tie_rule"]
