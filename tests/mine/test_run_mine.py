"""``run_mine`` end to end on real shards holding natural clips and real splices (a Ray actor pool), its outputs,
and resuming."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mosear.config import load_config
from mosear.mine.config import MineConfig
from mosear.mine.subsets import SUBSETS

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import LocalOpenAIServer  # noqa: E402

N_PAIRS = 27  # 1 per face clip: enough to exercise every path, small enough for 2 cores


def mine_cfg(samples_dir: Path, shards: Path, out: Path, **extra) -> MineConfig:
    return load_config(MineConfig, None, {
        "shards": str(shards), "output": str(out), "workers": 2, "progress": False, **extra,
    })


@pytest.fixture(scope="module")
def spliced_shards(samples_dir, tmp_path_factory, ray_local) -> Path:
    """The sample corpus plus N_PAIRS face/voice splices, sharded (natural: 3 shards, spliced: 2)."""
    import yaml

    from mosear.shards.config import ShardConfig
    from mosear.shards.run import run_shard

    root = tmp_path_factory.mktemp("spliced_in")
    sources = [{**s, "base_dir": str(samples_dir)} for s in yaml.safe_load((samples_dir / "corpus.yaml").read_text())["sources"]]
    sources.append({"adapter": "splice", "root": str(samples_dir), "options": {
        "faces": "ravdess", "voices": "ravdess_audio", "max_pairs": N_PAIRS}})
    res = run_shard(load_config(ShardConfig, None, {"sources": sources, "output": str(root / "shards"),
                                                    "num_frames": 6, "height": 112, "width": 112,
                                                    "samples_per_shard": 8, "progress": False}))
    assert res.written == 33 + N_PAIRS, res
    return root / "shards"


@pytest.fixture(scope="module")
def mined(samples_dir, spliced_shards, tmp_path_factory):
    from mosear.mine.run import run_mine

    out = tmp_path_factory.mktemp("mined")
    with LocalOpenAIServer() as srv:
        cfg = mine_cfg(samples_dir, spliced_shards, out, llm={"base_url": srv.base_url, "model": "tiny-local"})
        res = run_mine(cfg)
        n_requests = len(srv.requests)
    return cfg, res, out, n_requests


@pytest.mark.slow
def test_outputs_follow_the_contract(mined):
    cfg, res, out, n_requests = mined
    assert res.shards_total == 5 + 4 and res.shards_mined == 9
    df = pd.read_parquet(out / "conflicts.parquet")
    for col in ("key", "shard", "label", "audio_pred", "audio_probs", "visual_pred", "visual_probs", "text_pred",
                "text_probs", "subset", "margin", "origin", "stages", "caption", "reasoning", "misleading_cue", "split"):
        assert col in df.columns, col
    assert df["key"].is_unique
    dropped = pd.read_parquet(out / "dropped.parquet")
    assert len(df) + len(dropped) == res.summary["samples_in"] == 33 + N_PAIRS  # every input accounted for
    assert set(df["subset"]) <= {*SUBSETS, "spliced"} and set(df["origin"]) <= {"natural", "spliced", "human-rated"}
    assert set(df.loc[df["origin"] == "spliced", "subset"]) == {"spliced"} and df.loc[df["origin"] == "spliced", "label"].isna().all()
    assert (df["origin"] == "human-rated").sum() == 6  # CREMA-D 1001, rated per modality
    assert (df["origin"] == "spliced").sum() == N_PAIRS - (dropped["key"].str.contains("splice").sum())
    assert df["stages"].iloc[0].startswith("require_label@2,signal_quality@1,audio_egemaps@egemaps-v02")
    assert all(len(p) == 11 for p in df["audio_probs"])
    assert set(df["split"]) <= {"train", "validation", "test", "unassigned"}
    for s in SUBSETS[:3]:
        export = json.loads((out / f"{s}.json").read_text())
        assert set(export) == set(df.loc[df["subset"] == s, "key"])
        assert all(v["reason"] and v["label"] for v in export.values())
        for split in ("train", "validation", "test"):  # the CA-MER release layout, per split
            part = json.loads((out / split / f"{s}.json").read_text())
            assert set(part) == set(df.loc[(df["subset"] == s) & (df["split"] == split), "key"])
            assert all(v["split"] == split for v in part.values())
        # the misleading cue is its own field, never part of the exported reasoning
        assert all((v["misleading_cue"] is None) == (s == "consistent") for v in export.values()), export
        assert all(v["misleading_cue"] not in v["reason"] for v in export.values() if v["misleading_cue"])
    # the face sentence names the reading that assigned the subset (template captions: first sentence)
    for r in df[df["subset"].isin(["consistent", "video_aligned"]) & (df["origin"] != "human-rated")].to_dict("records"):
        assert f"reads as {r['visual_pred']} (cross-fitted face classifier" in r["reasoning"], r["reasoning"]
    from mosear.mine.assemble import has_truth

    truth = df[[has_truth(r) for r in df.to_dict("records")]]
    for split in ("train", "validation", "test"):  # items with a truth whose cues decided no subset: scored too
        amb = json.loads((out / split / "ambiguous.json").read_text())
        assert set(amb) == set(truth.loc[(truth["subset"] == "ambiguous") & (truth["split"] == split), "key"])
        assert all(v["label"] and v["origin"] in ("natural", "human-rated") for v in amb.values())
    spliced = json.loads((out / "test" / "spliced.json").read_text())  # preference items, apart
    assert set(spliced) == set(df.loc[(df["subset"] == "spliced") & (df["split"] == "test"), "key"])
    assert all(v["label"] is None and v["face_label"] and v["voice_label"] for v in spliced.values())
    mix = pd.read_parquet(out / "train_mix.parquet")  # splice_target none (default): no splice trains
    assert set(mix["key"]) == set(df.loc[~df["subset"].isin(["ambiguous", "spliced"]) & (df["split"] == "train"), "key"])
    totals = mix.groupby("subset")["weight"].sum()
    assert totals.max() - totals.min() < 1e-6
    # captions went through the local OpenAI-compatible server
    assert n_requests == len(df) and (df["caption_source"] == "llm:tiny-local").all()
    assert df["caption"].str.contains("Overall, the person is").all()


@pytest.mark.slow
def test_summary_reports_classifiers_subset_quality_and_stage_stats(mined):
    _, res, out, _ = mined
    s = json.loads((out / "summary.json").read_text())
    assert (out / "summary.png").stat().st_size > 10_000
    for m in ("audio", "visual"):
        c = s["classifiers"][m]
        assert c["folds"] >= 2 and c["scored_rows"] > 0 and 0 <= c["cross_fitted_accuracy"] <= 1
        assert c["folds"] >= 2
        assert s["classifier_accuracy_on_spliced"][m] is not None
    # each classifier read the features its stages declare, nothing listed elsewhere
    assert {m: c["features"] for m, c in s["classifiers"].items()} == {
        "audio": ["audio_feats"], "visual": ["visual_feats"], "text": ["text_feats"]}
    q = s["subset_quality_on_known_truth"]  # splices have no truth any more: nothing to score here
    assert all(set(v) == {"precision", "recall", "assigned", "true", "tp"} for v in q.values())
    names = [st["name"] for st in s["stage_stats"]]
    assert names == ["require_label", "signal_quality", "audio_egemaps", "visual_fer", "text_lexicon"]
    assert abs(sum(st["time_share"] for st in s["stage_stats"]) - 1) < 1e-3
    assert s["stage_stats"][0]["in"] == 33 + N_PAIRS
    conf = s["audio_vs_visual_confusion"]
    assert sum(map(sum, conf["rows_audio_cols_visual"])) > 0


@pytest.mark.slow
def test_no_test_item_shares_a_key_face_voice_or_group_with_training(mined):
    """Walk every row of the mined test split: its key, face source and voice source (and its speaker,
    under speaker grouping) never occur in a train row; the summary names the grouping used."""
    _, _, out, _ = mined
    df = pd.read_parquet(out / "conflicts.parquet")
    s = json.loads((out / "summary.json").read_text())
    grouping = s["splits"]["grouping"]
    train = df[df["split"] == "train"]
    train_sources = set(train["face_take"]) | set(train["voice_take"])
    test = df[df["split"] == "test"]
    assert len(test) > 0 and len(train) > 0
    for r in test.to_dict("records"):
        assert r["key"] not in set(train["key"])
        assert r["face_take"] not in train_sources and r["voice_take"] not in train_sources, r["key"]
        if grouping == "speaker":
            assert r["speaker"] not in set(train["speaker"])
    # 8 people (7 RAVDESS actors, CREMA-D 1001): person-disjoint, and the summary names them
    assert grouping == "speaker" and not s["splits"]["fallbacks"] and s["splits"]["person_disjoint"]
    people = s["splits"]["people"]
    assert len(people["test"]) >= 2 and len(people["validation"]) >= 1 and not set(people["test"]) & set(people["train"])
    counts = s["splits"]["by_subset_origin"]
    assert sum(n for sp in counts.values() for sub in sp.values() for n in sub.values()) == len(df)
    assert counts["test"]["consistent"]["natural"] == int(((df["split"] == "test") & (df["subset"] == "consistent")
                                                            & (df["origin"] == "natural")).sum())
    assert s["splits"]["unassigned"] == int((df["split"] == "unassigned").sum())


@pytest.mark.slow
def test_spliced_shards_carry_exact_per_modality_truth(mined):
    from mosear.shards.reader import iter_samples, list_shards

    _, _, out, _ = mined
    shards = [p for p in list_shards(mined[0].shards) if p.name.startswith("spliced-")]  # beside the natural ones
    assert len(shards) == 4  # 27 splices, 8 per shard
    samples = list(iter_samples(shards))
    assert len(samples) == N_PAIRS
    for s in samples:
        ex = s["meta"]["extra"]
        assert ex["origin"] == "spliced" and ex["face_label"] and ex["voice_label"]
        assert s["meta"]["label"] is None  # a splice has no true emotion: its cues are face_label, voice_label
        assert ex["conflict"] == (ex["face_label"] != ex["voice_label"])
        assert s["frames"].shape == (6, 112, 112, 3) and s["sample_rate"] == 16000  # matches the input shards


@pytest.mark.slow
def test_rerun_resumes_without_redoing_or_duplicating(mined, samples_dir):
    from mosear.mine.run import run_mine

    cfg, first, out, _ = mined
    before = pd.read_parquet(out / "conflicts.parquet")
    # A job killed while mining one shard leaves its evidence without the stats file (the commit
    # marker is written last): reproduce that state for one shard.
    victim = sorted((out / "evidence").glob("*.stats.json"))[1]
    victim.unlink()
    res = run_mine(cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"base_url": None})}))
    assert (res.shards_mined, res.shards_skipped) == (1, 8)
    after = pd.read_parquet(out / "conflicts.parquet")
    assert after["key"].is_unique and set(after["key"]) == set(before["key"])
    # (a fold with one class predicts nothing: NaN, equal to itself here)
    assert after.set_index("key")["audio_pred"].fillna("-").equals(before.set_index("key")["audio_pred"].fillna("-"))


@pytest.mark.slow
def test_features_table_holds_every_mined_key(mined):
    """mined/features.parquet: the evidence vectors of every mined key, as the model's feature input reads them."""
    from mosear.mine.stages.audio import EGEMAPS_DIM
    from mosear.mine.stages.visual import VISUAL_DIM
    from mosear.model.features import load_features

    _cfg, _res, out, _n = mined
    table, dims = load_features(out / "features.parquet")
    df = pd.read_parquet(out / "conflicts.parquet")
    assert set(df["key"]) <= set(table)
    assert dims == {"visual": 11 + VISUAL_DIM, "audio": EGEMAPS_DIM}
    faces = df[df["face_found"] == True]["key"]  # noqa: E712
    assert all(table[k]["visual"] is not None and not np.isnan(table[k]["visual"][:11]).any() for k in faces)
    assert all(table[k]["audio"] is not None and table[k]["audio"].size == EGEMAPS_DIM for k in df["key"])
