"""Each adapter on small label files written here in its dataset's documented format, pointing at the
real sample clips (copied under the names the dataset uses)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from mosear.adapters import safe_id
from mosear.config import ConfigError, load_config
from mosear.shards.config import ShardConfig
from mosear.shards.plan import ShardPlan, plan_corpus

from release_files import copy_clips

SMALL = {"num_frames": 2, "height": 16, "width": 16, "progress": False}


def _plan(tmp_path, **source):
    cfg = load_config(ShardConfig, overrides={"sources": [source], "output": str(tmp_path / "out"), **SMALL})
    plan = plan_corpus(cfg)
    clips = {c["dataset"] + "__" + c["clip_id"]: c for s in plan.shards for c in s.clips}
    return cfg, plan, clips



def _decode_one(cfg, tmp_path, clip):
    from mosear.shards.reader import iter_samples, list_shards
    from mosear.shards.run import build_shard

    stats = build_shard(ShardPlan("check", 0, [clip]), cfg, tmp_path / "decoded", cfg.shard_hash())
    assert stats["num_samples"] == 1, stats
    return next(iter_samples(list_shards(tmp_path / "decoded")))


def test_ravdess_codes(samples_dir, tmp_path):
    cfg, plan, clips = _plan(tmp_path, adapter="ravdess", root=str(samples_dir / "ravdess"),
                             options={"test_actors": [5]})
    assert len(clips) == 27 and plan.quarantine == []  # 7 actors; actor 05 has 14
    c = clips["ravdess__01-01-06-02-01-01-05"]
    assert (c["label"], c["orig_label"], c["split"]) == ("fear", "fearful", "test")
    assert clips["ravdess__01-01-06-01-01-01-09"]["split"] != "test"  # only actor 05 is pinned to test
    assert c["extra"]["intensity"] == "strong" and c["transcript"] == "Kids are talking by the door"


def test_crema_d_names_and_ratings(samples_dir, tmp_path):
    root = tmp_path / "VideoFlash"
    root.mkdir()
    shutil.copy(samples_dir / "crema_d" / "1001_DFA_ANG_XX.flv", root)
    shutil.copy(samples_dir / "crema_d_extra" / "sad_correct.mp4", root / "1002_IEO_SAD_HI.mp4")
    shutil.copy(samples_dir / "crema_d_extra" / "happy_wrong.mp4", root / "not_a_crema_name.mp4")
    (tmp_path / "processedResults").mkdir()
    with open(tmp_path / "processedResults" / "summaryTable.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel", "MultiModalVote", "MultiModalLevel"])
        w.writerow(["1", "1001_DFA_ANG_XX", "N", "50", "A", "60.5", "A", "70"])
        w.writerow(["2", "1002_IEO_SAD_HI", "S:N", "40:20", "S", "80", "S", "75"])
    cfg, plan, clips = _plan(tmp_path, adapter="crema_d", root=str(root))
    flv = clips["crema_d__1001_DFA_ANG_XX"]
    assert flv["label"] == "angry" and flv["transcript"] == "Don't forget a jacket"
    assert flv["extra"]["ratings"]["audio"]["votes"] == ["neutral"]  # voice and face raters disagree
    assert flv["extra"]["ratings"]["visual"]["votes"] == ["angry"]
    assert clips["crema_d__1002_IEO_SAD_HI"]["extra"]["ratings"]["audio"]["votes"] == ["sad", "neutral"]
    assert [q["reason"] for q in plan.quarantine] == ["bad_name"]
    sample = _decode_one(cfg, tmp_path, flv)
    assert sample["meta"]["extra"]["ratings"]["visual"]["votes"] == ["angry"] and sample["frames"].shape == (2, 16, 16, 3)


def test_generic_jsonl_and_parquet(samples_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"path": "ravdess/01-01-03-01-01-02-05.mp4", "label": "Happiness", "split": "val", "speaker": "s5",
             "transcript": "Kids are talking by the door", "clip_id": "c1", "mood": "up"},
            {"path": "crema_d_extra/sad_correct.mp4", "label": "sadness", "split": "test"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    for manifest in ("m.jsonl", "m.parquet"):
        cfg, plan, clips = _plan(tmp_path, adapter="generic", root=str(samples_dir), manifest=str(tmp_path / manifest),
                                 dataset="mine")
        assert clips["mine__c1"]["label"] == "happy" and clips["mine__c1"]["orig_label"] == "Happiness"
        assert clips["mine__c1"]["split"] == "val" and clips["mine__c1"]["extra"] == {"mood": "up"}
        assert clips["mine__sad_correct"]["label"] == "sad"
    assert [q["reason"] for q in plan_corpus(load_config(ShardConfig, overrides={
        "sources": [{"adapter": "generic", "root": str(samples_dir), "manifest": str(tmp_path / "m.jsonl")}],
        **SMALL})).quarantine] == ["bad_manifest_row"]


def test_mer2023_npz_and_subtitles(samples_dir, tmp_path):
    names = ["sample_00000001", "sample_00000002", "sample_00000003"]
    copy_clips(samples_dir, tmp_path / "video", [n + ".mp4" for n in names[:2]] + [names[2] + ".avi"])
    np.savez(tmp_path / "label-6way.npz",
             train_corpus=np.array({names[0]: {"emo": "worried", "val": -1.2}, names[1]: {"emo": "happy", "val": 2.0}}),
             test3_corpus=np.array({names[2]: {"emo": "surprise", "val": -10}, "sample_99999999": {"emo": "sad", "val": 0}}))
    with open(tmp_path / "subtitle_chieng.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["", "name", "chinese", "english"])
        w.writerow([0, names[0], "我有点担心。", "I'm a bit worried."])
    cfg, plan, clips = _plan(tmp_path, adapter="mer2023", root=str(tmp_path / "video"),
                             manifest=str(tmp_path / "label-6way.npz"),
                             options={"subtitles": str(tmp_path / "subtitle_chieng.csv")})
    c = clips["mer2023__sample_00000001"]
    assert (c["label"], c["split"], c["transcript"]) == ("worried", "train", "I'm a bit worried.")
    assert c["extra"] == {"valence": -1.2, "transcript_zh": "我有点担心。"}
    c3 = clips["mer2023__sample_00000003"]
    assert c3["split"] == "test3" and c3["extra"]["valence"] is None and c3["path"].endswith(".avi")
    assert _decode_one(cfg, tmp_path, c)["meta"]["transcript"] == "I'm a bit worried."
    # a labelled name without its video is quarantined at plan time as "missing", naming where it was looked for
    assert "mer2023__sample_99999999" not in clips
    (q,) = plan.quarantine
    assert q["reason"] == "missing" and f"{tmp_path / 'video'}/**/sample_99999999." in q["error"]
    assert plan.coverage_line() == "3 of 4 label rows have a clip"


def test_dfew_folds(samples_dir, tmp_path):
    copy_clips(samples_dir, tmp_path / "Clip" / "original", ["00001.mp4", "00002.mp4", "00003.mp4"])
    split_dir = tmp_path / "EmoLabel_DataSplit"
    for split, rows in (("train", [("1", "4"), ("2", "7")]), ("test", [("3", "1"), ("4", "9")])):
        (split_dir / f"{split}(single-labeled)").mkdir(parents=True)
        with open(split_dir / f"{split}(single-labeled)" / "set_2.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["video_name", "label"])
            w.writerows(rows)
    cfg, plan, clips = _plan(tmp_path, adapter="dfew", root=str(tmp_path / "Clip"), manifest=str(split_dir),
                             options={"fold": 2})
    assert {k: (c["label"], c["split"]) for k, c in clips.items()} == {
        "dfew__00001": ("angry", "train"), "dfew__00002": ("fear", "train"), "dfew__00003": ("happy", "test")}
    assert [q["reason"] for q in plan.quarantine] == ["bad_label"]
    assert _decode_one(cfg, tmp_path, clips["dfew__00003"])["meta"]["extra"]["fold"] == 2
    with pytest.raises(ConfigError, match="set_3.csv"):
        _plan(tmp_path, adapter="dfew", root=str(tmp_path / "Clip"), manifest=str(split_dir), options={"fold": 3})


def test_mafw_folds(samples_dir, tmp_path):
    copy_clips(samples_dir, tmp_path / "clips", ["00025.mp4", "00026.mp4", "00027.mp4"])
    base = tmp_path / "single" / "no_caption" / "set_1"
    base.mkdir(parents=True)
    (base / "train.txt").write_text("00025.mp4 anxiety\n00026.mp4 helplessness\n")
    (base / "test.txt").write_text("00027.mp4 4\n00028.mp4 boredom\n")
    cfg, plan, clips = _plan(tmp_path, adapter="mafw", root=str(tmp_path / "clips"),
                             manifest=str(tmp_path / "single" / "no_caption"))
    assert clips["mafw__00025"]["label"] == "worried"
    assert clips["mafw__00026"]["label"] is None and clips["mafw__00026"]["orig_label"] == "helplessness"
    assert (clips["mafw__00027"]["label"], clips["mafw__00027"]["split"]) == ("happy", "test")
    assert [q["reason"] for q in plan.quarantine] == ["bad_label"]


def test_ca_mer_subsets(samples_dir, tmp_path):
    copy_clips(samples_dir, tmp_path / "mer", ["sample_00000010.mp4", "sample_00000011.mp4", "sample_00000012.mp4"])
    gt = tmp_path / "ca_mer"
    gt.mkdir()
    (gt / "video_aligned.json").write_text(json.dumps(
        {"sample_00000010": "The furrowed brow shows anger although the voice sounds calm."}))
    (gt / "audio_aligned.json").write_text(json.dumps(
        {"sample_00000011": {"reason": "The trembling voice reveals fear; the face stays neutral.", "label": "fear"}}))
    (gt / "consistent.json").write_text(json.dumps({"sample_00000012": {"caption": "Smiling and laughing: happy."}}))
    cfg, plan, clips = _plan(tmp_path, adapter="ca_mer", root=str(tmp_path / "mer"), manifest=str(gt))
    assert {k: c["split"] for k, c in clips.items()} == {
        "ca_mer__sample_00000010": "video_aligned", "ca_mer__sample_00000011": "audio_aligned",
        "ca_mer__sample_00000012": "consistent"}
    assert clips["ca_mer__sample_00000011"]["label"] == "fear"
    assert "furrowed brow" in clips["ca_mer__sample_00000010"]["extra"]["reason"]
    assert sorted(s.name for s in plan.shards) == ["audio_aligned-000000", "consistent-000000", "video_aligned-000000"]


@pytest.mark.parametrize("name,expected", [
    ("01-01-03-01-01-02-05", "01-01-03-01-01-02-05"), ("a b", "a_b-"), ("a_b", "a_b"), ("été", "ete-"), ("悲しい", "clip-")])
def test_safe_id(name, expected):
    sid = safe_id(name)
    assert sid.startswith(expected) and all(c.isascii() and (c.isalnum() or c in "_-") for c in sid)
    assert safe_id("a b") != safe_id("a_b") and safe_id(name) == sid


def test_generic_manifest_rows_without_a_file_and_files_without_a_row(samples_dir, tmp_path):
    """Catches: a manifest row whose file is absent planned into a shard (to fail at decode, or leave an
    empty tar), and videos under the root that no row names ignored silently (issue 23 items 7, 8)."""
    root = tmp_path / "clips"
    copy_clips(samples_dir, root, ["a.mp4", "b.mp4", "c.mp4"])
    (root / "m.csv").write_text("path,label\na.mp4,happy\nb.mp4,sad\ngone.mp4,angry\n")
    cfg, plan, clips = _plan(tmp_path, adapter="generic", root=str(root), manifest=str(root / "m.csv"), dataset="d")
    assert sorted(clips) == ["d__a", "d__b"]
    (q,) = plan.quarantine
    assert (q["reason"], q["error"]) == ("missing", f"m.csv row 3: {root / 'gone.mp4'} does not exist")
    assert [(s["source"], s["reason"]) for s in plan.skipped] == [("c.mp4", "unlabelled")]
    assert plan.coverage_line() == "2 of 3 label rows have a clip" and plan.inputs == 4
