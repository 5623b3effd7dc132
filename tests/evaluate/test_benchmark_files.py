"""Benchmark readers on small files in each released format, and their errors on bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mosear.evaluate.benchmark_files import (
    DFEW_LABELS,
    MAFW_LABELS,
    BenchmarkFormatError,
    load_benchmark,
    read_npz_safely,
)
from mosear.evaluate.config import BenchmarkSpec
from mosear.labels import MER2023_LABELS


def _camer(root, rows_per_subset):
    root.mkdir(parents=True, exist_ok=True)
    for subset, rows in rows_per_subset.items():
        (root / f"{subset}.json").write_text(json.dumps(rows))
    return root


def test_camer_three_subsets(tmp_path):
    root = _camer(tmp_path / "camer", {
        "video_aligned": {"sample_00000001": {"reason": "Her face is joyful though her voice is flat.", "label": "happy"}},
        "audio_aligned": {"sample_00000002": "He shouts furiously while smiling."},
        "consistent": [{"name": "sample_00000003", "smp_reason_caption": "Sad face, sad voice.", "emo": "sad"}],
    })
    b = load_benchmark(BenchmarkSpec(name="camer", format="camer", path=str(root), shards="x"))
    assert b.labels == MER2023_LABELS and b.has_references
    by_key = {it.key: it for it in b.items}
    assert set(by_key) == {"ca_mer__sample_00000001", "ca_mer__sample_00000002", "ca_mer__sample_00000003"}
    assert by_key["ca_mer__sample_00000001"].subset == "video_aligned"
    assert by_key["ca_mer__sample_00000002"].label is None  # reasoning only
    assert by_key["ca_mer__sample_00000003"].label == "sad"
    assert len(b.files) == 3 and b.shard_dirs == ["x"]


def test_mined_keys_are_used_as_they_are(tmp_path):
    root = _camer(tmp_path / "mined", {
        "video_aligned": {"ravdess__01-01-03-01-01-01-05": {"reason": "x", "label": "happy"}},
        "audio_aligned": {"cremad__1001_DFA_ANG_XX": {"reason": "y", "label": "angry"}},
        "consistent": {"ravdess__01-01-02-01-01-01-05": {"reason": "z", "label": "calm"}},
    })
    b = load_benchmark(BenchmarkSpec(name="m", format="mined", path=str(root), shards="s", split="all"))
    assert {it.key for it in b.items} == {"ravdess__01-01-03-01-01-01-05", "cremad__1001_DFA_ANG_XX", "ravdess__01-01-02-01-01-01-05"}
    assert "calm" in b.labels


def test_camer_row_without_fields_is_named(tmp_path):
    root = _camer(tmp_path / "c", {
        "video_aligned": {"sample_1": {"reason": "ok", "label": "happy"}},
        "audio_aligned": {"sample_2": {"note": "nothing useful"}},
        "consistent": {},
    })
    with pytest.raises(BenchmarkFormatError, match=r"audio_aligned\.json: row 'sample_2': missing fields"):
        load_benchmark(BenchmarkSpec(name="c", format="camer", path=str(root)))


def test_camer_missing_subset_file(tmp_path):
    root = _camer(tmp_path / "c", {"video_aligned": {}, "consistent": {}})
    with pytest.raises(BenchmarkFormatError, match="audio_aligned.json"):
        load_benchmark(BenchmarkSpec(name="c", format="camer", path=str(root)))


def test_camer_unknown_label_is_named(tmp_path):
    root = _camer(tmp_path / "c", {"video_aligned": {"s1": {"reason": "r", "label": "bored"}},
                                   "audio_aligned": {}, "consistent": {}})
    with pytest.raises(BenchmarkFormatError, match=r"row 's1': label 'bored'"):
        load_benchmark(BenchmarkSpec(name="c", format="camer", path=str(root)))


def test_mer2023_npz(tmp_path):
    p = tmp_path / "label-6way.npz"
    np.savez(p, train_corpus={"sample_00000009": {"emo": "sad", "val": -1.0}},
             test1_corpus={"sample_00000001": {"emo": "worried", "val": np.float64(-2.0)},
                           "sample_00000002": {"emo": "fear", "val": -10},
                           "sample_00000003": {"emo": "surprise", "val": 0.5}})
    b = load_benchmark(BenchmarkSpec(name="mer", format="mer2023", path=str(p)))
    assert b.labels == MER2023_LABELS
    assert [(it.key, it.label) for it in b.items] == [
        ("mer2023__sample_00000001", "worried"),
        ("mer2023__sample_00000002", "neutral"),  # outside the six -> neutral (Emotion-LLaMA protocol)
        ("mer2023__sample_00000003", "surprise"),
    ]
    with pytest.raises(BenchmarkFormatError, match="no entry 'test3_corpus'"):
        load_benchmark(BenchmarkSpec(name="mer", format="mer2023", path=str(p), split="test3_corpus"))


def test_mer2023_npz_row_missing_emo(tmp_path):
    p = tmp_path / "l.npz"
    np.savez(p, test1_corpus={"sample_1": {"emo": "happy"}, "sample_2": {"val": 1.0}})
    with pytest.raises(BenchmarkFormatError, match=r"test1_corpus row 'sample_2': missing field 'emo'"):
        load_benchmark(BenchmarkSpec(name="mer", format="mer2023", path=str(p)))


def test_npz_reader_refuses_arbitrary_objects(tmp_path):
    import os

    p = tmp_path / "evil.npz"
    np.savez(p, test1_corpus=np.array([os.getcwd], dtype=object))
    with pytest.raises(Exception, match="refusing to load"):
        read_npz_safely(p)


def test_mer2023_emotion_llama_list(tmp_path):
    p = tmp_path / "relative_test3_NCEV.txt"
    p.write_text("sample_00000007 96 happy -10\nsample_00000008 80 doubt -10\n")
    b = load_benchmark(BenchmarkSpec(name="t3", format="mer2023", path=str(p)))
    assert [it.label for it in b.items] == ["happy", "neutral"]


def test_dfew_fold_folder(tmp_path):
    d = tmp_path / "EmoLabel_DataSplit" / "test(single-labeled)"
    d.mkdir(parents=True)
    (d / "set_2.csv").write_text("video_name,label\n1,1\n2,7\n3,3\n")
    b = load_benchmark(BenchmarkSpec(name="dfew", format="dfew", path=str(tmp_path / "EmoLabel_DataSplit"), fold=2))
    assert b.labels == DFEW_LABELS
    assert [(it.key, it.label) for it in b.items] == [("dfew__00001", "happy"), ("dfew__00002", "fear"), ("dfew__00003", "neutral")]


def test_dfew_bad_label_number(tmp_path):
    p = tmp_path / "set_1.csv"
    p.write_text("video_name,label\n1,1\n2,9\n")
    with pytest.raises(BenchmarkFormatError, match=r"set_1.csv: line 3: label number 9"):
        load_benchmark(BenchmarkSpec(name="dfew", format="dfew", path=str(p)))


def test_mafw_fold_folder(tmp_path):
    (tmp_path / "set_3").mkdir()
    p = tmp_path / "set_3" / "test.txt"
    p.write_text("00025.mp4 anger\n00026.mp4 helplessness\n00027.mp4 9\n")
    b = load_benchmark(BenchmarkSpec(name="mafw", format="mafw", path=str(tmp_path), fold=3))
    assert b.labels == MAFW_LABELS and "helplessness" in b.labels and "angry" in b.labels
    assert [(it.key, it.label) for it in b.items] == [("mafw__00025", "angry"), ("mafw__00026", "helplessness"),
                                                     ("mafw__00027", "worried")]


def test_mafw_row_without_label(tmp_path):
    p = tmp_path / "test.txt"
    p.write_text("00025.mp4 anger\n00026.mp4\n")
    with pytest.raises(BenchmarkFormatError, match="line 2"):
        load_benchmark(BenchmarkSpec(name="mafw", format="mafw", path=str(p)))


def test_emer_csv_and_missing_reasoning(tmp_path):
    p = tmp_path / "emer.csv"
    p.write_text("names,eng_reasons,emo\nsample_00000001,\"He frowns, sounding angry.\",angry\n")
    b = load_benchmark(BenchmarkSpec(name="emer", format="emer", path=str(p)))
    assert b.items[0].key == "mer2023__sample_00000001" and b.items[0].reference.startswith("He frowns")
    bad = tmp_path / "bad.csv"
    bad.write_text("names,eng_reasons\nsample_1,ok\nsample_2,\n")
    with pytest.raises(BenchmarkFormatError, match=r"row 2 \(sample_2\): missing fields"):
        load_benchmark(BenchmarkSpec(name="emer", format="emer", path=str(bad)))


def test_duplicate_keys_are_an_error(tmp_path):
    root = _camer(tmp_path / "c", {"video_aligned": {"s1": "a"}, "audio_aligned": {"s1": "b"}, "consistent": {}})
    with pytest.raises(BenchmarkFormatError, match="listed twice"):
        load_benchmark(BenchmarkSpec(name="c", format="camer", path=str(root)))


@pytest.mark.parametrize("fmt, adapter", [("dfew", "dfew"), ("mafw", "mafw"), ("camer", "ca_mer")])
def test_keys_match_the_shard_adapters(tmp_path, fmt, adapter):
    """A benchmark row's key is the key `mosear shard` gives the same clip (so media are found)."""
    from mosear.adapters import get_adapter
    from mosear.shards.config import SourceConfig

    videos = tmp_path / "videos"
    videos.mkdir()
    if fmt == "dfew":
        split = tmp_path / "split"
        for s in ("train", "test"):
            (split / f"{s}(single-labeled)").mkdir(parents=True)
            (split / f"{s}(single-labeled)" / "set_1.csv").write_text("video_name,label\n12,2\n7,5\n")
        bench_path = split
    elif fmt == "mafw":
        split = tmp_path / "split"
        (split / "set_1").mkdir(parents=True)
        for s in ("train", "test"):
            (split / "set_1" / f"{s}.txt").write_text("00012.mp4 sadness\n00007.mp4 anger\n")
        bench_path = split
    else:
        split = _camer(tmp_path / "camer", {"video_aligned": {"sample_00000012": {"reason": "r", "label": "sad"}},
                                            "audio_aligned": {"sample 7 (b)": "r"}, "consistent": {}})
        bench_path = split
    src = SourceConfig(adapter=adapter, root=videos, manifest=split, options={"fold": 1})
    shard_keys = {rec.key for rec in get_adapter(adapter).clips(videos, src) if rec.split in ("test", "video_aligned", "audio_aligned")}
    bench_keys = {it.key for it in load_benchmark(BenchmarkSpec(name="b", format=fmt, path=str(bench_path))).items}
    assert bench_keys == shard_keys


def test_only_shards_holding_benchmark_keys_are_read(eval_shards, shard_keys):
    from mosear.evaluate.benchmark_files import Benchmark, BenchmarkItem
    from mosear.evaluate.runner import _shards_with, iter_benchmark_samples
    from mosear.shards.reader import list_shards

    shards = list_shards(eval_shards)
    assert len(shards) >= 3
    last = shard_keys[-1][0]  # lives in the last shard only
    assert _shards_with(shards, {last}) == [shards[-1]]
    spec = BenchmarkSpec(name="b", format="mined", path=".", shards=str(eval_shards))
    bench = Benchmark(spec, ("sad",), [BenchmarkItem(last, "sad")], [str(eval_shards)], [])
    assert [s["key"] for s in iter_benchmark_samples(bench)] == [last]


@pytest.mark.parametrize("fmt", ["dfew", "mafw"])
def test_fold_names_keep_their_dots_in_both_readers(tmp_path, fmt):
    """One parse for the shard adapter and the benchmark reader: only a video extension is dropped, so
    ``take.v2.mp4`` is the clip ``take.v2`` (its file's stem) and ``take.v3`` listed without extension keeps
    its dot. (Before, the DFEW adapter cut at the first dot, the MAFW adapter dropped any last suffix,
    and the benchmark reader dropped only video extensions: the keys disagreed.)"""
    from pathlib import Path

    from mosear.adapters import SourceConfig, get_adapter

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("take.v2.mp4", "take.v3.mp4"):
        (videos / name).write_bytes(b"")  # listing only: nothing is decoded
    split = tmp_path / "split"
    if fmt == "dfew":
        files = [split / f"{s}(single-labeled)" / "set_1.csv" for s in ("train", "test")]
        rows = "video_name,label\ntake.v2.mp4,2\ntake.v3,happy\n"
    else:
        files = [split / "set_1" / f"{s}.txt" for s in ("train", "test")]
        rows = "take.v2.mp4 sadness\ntake.v3 4\n"
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(rows)
    src = SourceConfig(adapter=fmt, root=videos, manifest=split, options={"fold": 1})
    recs = [r for r in get_adapter(fmt).clips(videos, src) if r.split == "test"]
    assert [r.error for r in recs] == [None, None]
    assert [Path(r.path).name for r in recs] == ["take.v2.mp4", "take.v3.mp4"]  # the files were found
    bench = load_benchmark(BenchmarkSpec(name="b", format=fmt, path=str(split)))
    assert [it.key for it in bench.items] == [r.key for r in recs]
    assert [r.label for r in recs] == [it.label for it in bench.items] == ["sad", "happy"]


# ----------------------------------------------------------------- MER release CSVs (issue 23 items 1-3)
def _csv(path, header, rows):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_mer2024_openset_list_literals_are_words(tmp_path):
    """Catches: `_ov_labels` splitting MER2024's `check-openset.csv` list literal on commas and keeping the
    brackets and quotes (`"['pleasurable'"`), and the `emer` format rejecting the file for want of a
    reasoning column."""
    p = _csv(tmp_path / "check-openset.csv", ["name", "openset"],
             [["sample_00000001", "['pleasurable', 'self-deprecating', 'happy']"], ["sample_00000002", "['Worried', 'tense']"]])
    b = load_benchmark(BenchmarkSpec(name="ov", format="emer", path=str(p), shards="x"))
    by_key = {it.key: it for it in b.items}
    assert by_key["mer2023__sample_00000001"].ov_labels == ("pleasurable", "self-deprecating", "happy")
    assert by_key["mer2023__sample_00000002"].ov_labels == ("worried", "tense")
    assert all(it.label is None and it.reference is None for it in b.items) and b.has_references
    # the same literal inside a CA-MER/mined row's openset field
    root = _camer(tmp_path / "camer", {"video_aligned": {"s1": {"reason": "r", "openset": "['proud', 'happy']"}},
                                       "audio_aligned": {}, "consistent": {}})
    b = load_benchmark(BenchmarkSpec(name="c", format="camer", path=str(root), shards="x"))
    assert b.items[0].ov_labels == ("proud", "happy")


def test_openset_literal_that_does_not_parse_is_named(tmp_path):
    """Catches: a list literal that does not parse (or is code) read as words or evaluated, instead of an
    error naming the file, line and field with the count of such rows."""
    p = _csv(tmp_path / "check-openset.csv", ["name", "openset"],
             [["sample_00000001", "['happy'"], ["sample_00000002", "__import__('os').getcwd()"], ["sample_00000003", "['sad']"]])
    with pytest.raises(BenchmarkFormatError, match=r"check-openset.csv: 2 of 3 rows cannot be read: .*line 2 field 'openset'.*line 3 field 'openset'"):
        load_benchmark(BenchmarkSpec(name="ov", format="emer", path=str(p), shards="x"))
    root = _camer(tmp_path / "camer", {"video_aligned": {"s1": {"reason": "r", "openset": "['proud'"}},
                                       "audio_aligned": {}, "consistent": {}})
    with pytest.raises(BenchmarkFormatError, match=r"video_aligned.json: row 's1' field 'openset': .* is not a Python list literal"):
        load_benchmark(BenchmarkSpec(name="c", format="camer", path=str(root), shards="x"))


@pytest.mark.parametrize("text_field", [None, "reasons"])
def test_emer_v1_english_and_chinese(tmp_path, text_field):
    """Catches: EMER V1 (`names,emotions,subtitles,reasons`) losing every label (with `text_field: reasons`
    too), and Chinese emotion words (生气, 高兴, 担忧, 悲伤, 惊讶) refused or unmapped."""
    en = _csv(tmp_path / "emer_en.csv", ["names", "emotions", "subtitles", "reasons"],
              [["sample_00000001", "angry", "Late again?", "He frowns and raises his voice."]])
    zh = _csv(tmp_path / "emer_zh.csv", ["names", "emotions", "subtitles", "reasons"],
              [[f"sample_0000000{i}", w, "字幕", "理由"] for i, w in enumerate(("生气", "高兴", "担忧", "悲伤", "惊讶"), 1)])
    b = load_benchmark(BenchmarkSpec(name="en", format="emer", path=str(en), shards="x", text_field=text_field))
    assert (b.items[0].label, b.items[0].reference) == ("angry", "He frowns and raises his voice.")
    b = load_benchmark(BenchmarkSpec(name="zh", format="emer", path=str(zh), shards="x", text_field=text_field))
    assert [it.label for it in b.items] == ["angry", "happy", "worried", "sad", "surprise"]


def test_emer_unknown_emotion_words_are_counted_and_named(tmp_path):
    """Catches: an unknown emotion word (any language) scored as neutral or dropped silently."""
    p = _csv(tmp_path / "emer.csv", ["names", "emotions", "subtitles", "reasons"],
             [["sample_00000001", "生气", "s", "r"], ["sample_00000002", "焦躁不安", "s", "r"], ["sample_00000003", "gloomy", "s", "r"]])
    with pytest.raises(BenchmarkFormatError, match=r"emer.csv: 2 of 3 rows cannot be read: .*line 3 field 'emotions': "
                                                   r"unknown emotion word '焦躁不安'.*line 4 field 'emotions': unknown emotion word 'gloomy'"):
        load_benchmark(BenchmarkSpec(name="e", format="emer", path=str(p), shards="x"))


def test_mer_per_split_label_csv(tmp_path):
    """Catches: a per-split MER label CSV (`test1-label.csv`) read as an .npz, or read for another split than
    its name says; an unknown column set read anyway."""
    p = _csv(tmp_path / "test1-label.csv", ["name", "discrete", "valence"],
             [["sample_00000001", "worried", "-10"], ["sample_00000002", "happy", "1.5"]])
    b = load_benchmark(BenchmarkSpec(name="m", format="mer2023", path=str(p), shards="x", split="test1"))
    assert [(it.key, it.label) for it in b.items] == [("mer2023__sample_00000001", "worried"), ("mer2023__sample_00000002", "happy")]
    with pytest.raises(BenchmarkFormatError, match=r"test1-label.csv: its name says split 'test1', the benchmark asks for 'test2_corpus'"):
        load_benchmark(BenchmarkSpec(name="m", format="mer2023", path=str(p), shards="x", split="test2_corpus"))
    odd = _csv(tmp_path / "test2-label.csv", ["name", "emotion_word"], [["sample_00000001", "sad"]])
    with pytest.raises(BenchmarkFormatError, match=r"test2-label.csv: unknown column set \['name', 'emotion_word'\]"):
        load_benchmark(BenchmarkSpec(name="m", format="mer2023", path=str(odd), shards="x"))
