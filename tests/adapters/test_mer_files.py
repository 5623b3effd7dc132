"""The MER family's release files as the `mer2023` adapter reads them, and the label-file adapters' clip
search (DFEW's unpadded names, missing clips named with where they were looked for, videos no row names).

Every fixture is written here in the release's exact layout (file names, columns, list literals, Chinese
emotion words, unpadded names), never copied from the datasets; the clips are the repository's real
sample clips under the names the datasets use."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mosear.config import ConfigError, load_config
from mosear.shards.config import ShardConfig
from mosear.shards.plan import plan_corpus

from release_files import copy_clips, write_csv

SMALL = {"num_frames": 2, "height": 16, "width": 16, "progress": False}
NAMES = [f"sample_{i:08d}" for i in range(1, 7)]




def _plan(*sources):
    cfg = load_config(ShardConfig, overrides={"sources": list(sources), **SMALL})
    plan = plan_corpus(cfg)
    return plan, {c["dataset"] + "__" + c["clip_id"]: c for s in plan.shards for c in s.clips}


def test_per_split_label_csvs_take_the_split_of_their_file_name(samples_dir, tmp_path):
    """Catches: MER2023/2024/2025 label CSVs (no split column) all read as `split: train` (issue 23 item 1:
    a test1 source of 411 rows came out train). MER2024's -10 valence placeholder becomes null."""
    copy_clips(samples_dir, tmp_path / "video", [n + ".mp4" for n in NAMES])
    labels = tmp_path / "labels"
    train = write_csv(labels / "train-label.csv", ["name", "discrete", "valence"],
                       [[NAMES[0], "worried", "-1.5"], [NAMES[1], "happy", "2"]])
    test1 = write_csv(labels / "test1-label.csv", ["name", "discrete", "valence"], [[NAMES[2], "sad", "-10"]])
    t25 = write_csv(labels / "track1_train_disdim.csv", ["name", "discrete", "valence"], [[NAMES[3], "angry", "-3"]])
    t25test = write_csv(labels / "track1_test_dis.csv", ["name", "discrete"], [[NAMES[4], "surprise"]])
    root = str(tmp_path / "video")
    plan, clips = _plan(*({"adapter": "mer2023", "root": root, "manifest": str(m), "dataset": d}
                          for m, d in ((train, "mer2024"), (test1, "mer2024"), (t25, "mer2025"), (t25test, "mer2025"))))
    assert {k: (c["split"], c["label"]) for k, c in clips.items()} == {
        "mer2024__sample_00000001": ("train", "worried"), "mer2024__sample_00000002": ("train", "happy"),
        "mer2024__sample_00000003": ("test1", "sad"), "mer2025__sample_00000004": ("train", "angry"),
        "mer2025__sample_00000005": ("test", "surprise")}
    assert clips["mer2024__sample_00000003"]["extra"]["valence"] is None
    assert sorted(s.name for s in plan.shards) == ["test-000000", "test1-000000", "train-000000"]


def test_a_csv_whose_name_gives_no_split_needs_an_explicit_one(samples_dir, tmp_path):
    """Catches: a split defaulted to train when neither the file's name nor the source gives one, and an
    explicit split silently overriding a per-split file's own name."""
    copy_clips(samples_dir, tmp_path / "video", [n + ".mp4" for n in NAMES[:2]])
    ov = write_csv(tmp_path / "check-openset.csv", ["name", "openset"],
                    [[NAMES[0], "['pleasurable', 'self-deprecating', 'happy']"], [NAMES[1], "['Worried']"]])
    src = {"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(ov)}
    with pytest.raises(ConfigError, match=r"sources\.0 \(mer2023\): .*check-openset.csv: which split\?.*set `split:`"):
        _plan(src)
    plan, clips = _plan({**src, "split": "test"})
    c = clips["mer2023__sample_00000001"]
    assert c["split"] == "test" and c["label"] is None
    assert c["extra"]["ov_labels"] == ["pleasurable", "self-deprecating", "happy"]
    assert clips["mer2023__sample_00000002"]["extra"]["ov_labels"] == ["worried"]
    test1 = write_csv(tmp_path / "test1-label.csv", ["name", "discrete", "valence"], [[NAMES[0], "sad", "0"]])
    with pytest.raises(ConfigError, match=r"test1-label.csv: its name says split 'test1', the source says `split: train`"):
        _plan({**src, "manifest": str(test1), "split": "train"})


def test_bad_rows_name_file_line_and_field_and_are_counted(samples_dir, tmp_path):
    """Catches: a list literal that does not parse (or would run code), an unknown emotion word in either
    language, a valence that is not a number, lost or mis-read instead of quarantined with file, line and
    field; and an unknown column set read anyway."""
    copy_clips(samples_dir, tmp_path / "video", [n + ".mp4" for n in NAMES[:4]])
    marker = tmp_path / "ran"
    ov = write_csv(tmp_path / "check-openset.csv", ["name", "openset"], [
        [NAMES[0], "['happy', 'proud'"],  # unclosed
        [NAMES[1], f"__import__('pathlib').Path('{marker}').touch()"],  # code, not a literal
        [NAMES[2], "{'happy': 1}"],  # not a list
        [NAMES[3], "['calm']"]])
    plan, clips = _plan({"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(ov), "split": "test"})
    assert list(clips) == ["mer2023__sample_00000004"] and not marker.exists()
    reasons = {q["clip_id"]: (q["reason"], q["error"]) for q in plan.quarantine}
    assert set(reasons) == set(NAMES[:3]) and {r for r, _ in reasons.values()} == {"bad_manifest_row"}
    assert f"{ov} line 2 field 'openset': \"['happy', 'proud'\" is not a Python list literal" in reasons[NAMES[0]][1]
    assert "line 3 field 'openset'" in reasons[NAMES[1]][1] and "line 4 field 'openset'" in reasons[NAMES[2]][1]

    emer = write_csv(tmp_path / "emer.csv", ["names", "emotions", "subtitles", "reasons"], [
        [NAMES[0], "生气", "你怎么又迟到了", "皱眉，语气激动。"], [NAMES[1], "焦躁不安", "x", "y"], [NAMES[2], "gloomy", "x", "y"]])
    plan, clips = _plan({"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(emer), "split": "test"})
    assert clips["mer2023__sample_00000001"]["label"] == "angry"
    bad = sorted((q["reason"], q["error"]) for q in plan.quarantine)
    assert [r for r, _ in bad] == ["bad_label", "bad_label"]
    assert f"{emer} line 3 field 'emotions': unknown emotion word '焦躁不安'" in bad[0][1] + bad[1][1]
    assert "line 4 field 'emotions': unknown emotion word 'gloomy'" in bad[0][1] + bad[1][1]

    val = write_csv(tmp_path / "test2-label.csv", ["name", "discrete", "valence"], [[NAMES[0], "sad", "high"]])
    plan, _ = _plan({"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(val)})
    assert "line 2 field 'valence': 'high' is not a number" in plan.quarantine[0]["error"]

    odd = write_csv(tmp_path / "test3-label.csv", ["name", "label", "valence"], [[NAMES[0], "sad", "0"]])
    with pytest.raises(ConfigError, match=r"test3-label.csv: unknown column set \['name', 'label', 'valence'\]"):
        _plan({"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(odd)})
    extra = write_csv(tmp_path / "train-label.csv", ["name", "discrete", "valence", "arousal"], [[NAMES[0], "sad", "0", "1"]])
    with pytest.raises(ConfigError, match=r"columns \['arousal'\] are not part of a MER labels file"):
        _plan({"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(extra)})


def test_emer_v1_english_and_chinese(samples_dir, tmp_path):
    """Catches: EMER V1's columns (`names,emotions,subtitles,reasons`) not recognised, every label lost, and
    Chinese emotion words unmapped (the card's table: 生气 angry, 高兴 happy, 担忧 worried, 悲伤 sad, 惊讶 surprise)."""
    copy_clips(samples_dir, tmp_path / "video", [n + ".mp4" for n in NAMES[:5]])
    zh = write_csv(tmp_path / "emer-zh.csv", ["names", "emotions", "subtitles", "reasons"], [
        [n, w, "字幕", "理由"] for n, w in zip(NAMES, ("生气", "高兴", "担忧", "悲伤", "惊讶"))])
    en = write_csv(tmp_path / "emer-en.csv", ["names", "emotions", "subtitles", "reasons"], [
        [NAMES[0], "angry", "Late again?", "He frowns and raises his voice."]])
    _, clips = _plan({"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(zh), "split": "emer"})
    assert [clips[f"mer2023__{n}"]["label"] for n in NAMES[:5]] == ["angry", "happy", "worried", "sad", "surprise"]
    assert clips["mer2023__sample_00000003"]["orig_label"] == "担忧"
    _, clips = _plan({"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(en), "split": "emer"})
    c = clips["mer2023__sample_00000001"]
    assert (c["label"], c["transcript"], c["extra"]["reason"]) == ("angry", "Late again?", "He frowns and raises his voice.")


def test_crafted_npz_never_runs_code(samples_dir, tmp_path):
    """Catches: the MER2023 adapter loading the label .npz with `np.load(allow_pickle=True)` (issue 22:
    a crafted file ran `os.system` during `mosear shard`). The same file does run code under
    allow_pickle, as the end of the test shows, so the check can fail."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling opens (creates) the marker file

    np.savez(tmp_path / "label-6way.npz", train_corpus=np.array([Payload()], dtype=object))
    copy_clips(samples_dir, tmp_path / "video", [NAMES[0] + ".mp4"])
    with pytest.raises(ConfigError, match=r"label-6way.npz: not a MERTools label .npz: refusing to load io.open from a label file"):
        _plan({"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(tmp_path / "label-6way.npz")})
    assert not marker.exists()
    np.load(tmp_path / "label-6way.npz", allow_pickle=True)["train_corpus"]
    assert marker.exists()  # the fixture is a real exploit


def test_npz_corpora_missing_from_the_file_are_named(samples_dir, tmp_path):
    """Catches: an `options.corpora` array the .npz lacks skipped silently (a split read as empty)."""
    copy_clips(samples_dir, tmp_path / "video", [NAMES[0] + ".mp4"])
    np.savez(tmp_path / "l.npz", train_corpus=np.array({NAMES[0]: {"emo": "sad", "val": 0.0}}))
    src = {"adapter": "mer2023", "root": str(tmp_path / "video"), "manifest": str(tmp_path / "l.npz")}
    with pytest.raises(ConfigError, match=r"options.corpora names \['test1_corpus'\], which the file lacks \(has \['train_corpus'\]\)"):
        _plan({**src, "options": {"corpora": {"train_corpus": "train", "test1_corpus": "test1"}}})
    _, clips = _plan(src)
    assert clips["mer2023__sample_00000001"]["split"] == "train"


def test_dfew_unpadded_names_and_where_missing_clips_were_looked_for(samples_dir, tmp_path):
    """Catches: DFEW clips named `1.mp4` / `2.avi` (the split files' unpadded integers) quarantined as
    missing because only `00001.*` was looked for; a missing clip's message naming a made-up
    `root/{stem}.mp4` instead of the recursive search; videos no label row names ignored silently."""
    clips_dir = tmp_path / "Clip" / "clip_224x224"
    copy_clips(samples_dir, clips_dir, ["1.mp4", "2.avi", "00003.mp4", "99.mp4"])
    split_dir = tmp_path / "EmoLabel_DataSplit"
    write_csv(split_dir / "train(single-labeled)" / "set_1.csv", ["video_name", "label"], [["1", "4"], ["2", "7"]])
    write_csv(split_dir / "test(single-labeled)" / "set_1.csv", ["video_name", "label"], [["3", "1"], ["4", "2"]])
    plan, clips = _plan({"adapter": "dfew", "root": str(tmp_path / "Clip"), "manifest": str(split_dir)})
    assert {k: (c["label"], c["source"]) for k, c in clips.items()} == {
        "dfew__00001": ("angry", "clip_224x224/1.mp4"), "dfew__00002": ("fear", "clip_224x224/2.avi"),
        "dfew__00003": ("happy", "clip_224x224/00003.mp4")}
    (q,) = plan.quarantine
    root = tmp_path / "Clip"
    assert q["key"] == "dfew__00004" and q["reason"] == "missing"
    assert f"searched {root}/**/4." in q["error"] and f"{root}/**/00004." in q["error"] and "recursive" in q["error"]
    assert [(s["source"], s["reason"]) for s in plan.skipped] == [("clip_224x224/99.mp4", "unlabelled")]
    assert plan.coverage_line() == "3 of 4 label rows have a clip"


def test_mafw_and_ca_mer_missing_clips_say_where(samples_dir, tmp_path):
    """Catches: MAFW and CA-MER rows without a clip planned into shards (to fail at decode) with a made-up
    path, instead of quarantined at plan time naming the recursive search."""
    copy_clips(samples_dir, tmp_path / "clips" / "a", ["00025.mp4"])
    base = tmp_path / "single" / "no_caption" / "set_1"
    base.mkdir(parents=True)
    (base / "train.txt").write_text("00025.mp4 anxiety\n")
    (base / "test.txt").write_text("00026.mp4 4\n")
    plan, clips = _plan({"adapter": "mafw", "root": str(tmp_path / "clips"), "manifest": str(tmp_path / "single" / "no_caption")})
    assert list(clips) == ["mafw__00025"]
    assert [q["reason"] for q in plan.quarantine] == ["missing"]
    assert f"searched {tmp_path / 'clips'}/**/00026." in plan.quarantine[0]["error"]
    gt = tmp_path / "ca_mer"
    gt.mkdir()
    (gt / "consistent.json").write_text(json.dumps({NAMES[0]: "Smiling: happy.", NAMES[1]: "Frowning: angry."}))
    copy_clips(samples_dir, tmp_path / "mer", [NAMES[0] + ".mp4"])
    plan, clips = _plan({"adapter": "ca_mer", "root": str(tmp_path / "mer"), "manifest": str(gt)})
    assert list(clips) == ["ca_mer__sample_00000001"]
    assert f"searched {tmp_path / 'mer'}/**/sample_00000002." in plan.quarantine[0]["error"]
