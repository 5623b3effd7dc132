"""Open-vocabulary judges: the offline lexicon judge and an OpenAI-compatible endpoint judge, the
latter against a real HTTP server on 127.0.0.1 that speaks the chat-completions API (conftest)."""

from __future__ import annotations

import socket

import pytest

from mosear.evaluate.config import JudgeConfig
from mosear.evaluate.judges import (
    ChatJudge,
    JudgeUnavailable,
    LexiconJudge,
    SynonymTable,
    make_judge,
    set_precision_recall,
)


def test_shipped_table_groups_synonyms():
    t = SynonymTable.load()
    assert t.group("Furious") == "angry" and t.group("anger") == "angry"
    assert t.group("joyful") == "happy" and t.group("anxious") == "worried"
    assert t.group("zzz-unknown") == "zzz-unknown"


def test_table_rejects_word_in_two_groups(tmp_path):
    p = tmp_path / "syn.tsv"
    p.write_text("happy\tglad,joy\nsad\tglad\n")
    with pytest.raises(ValueError, match="'glad' is in both"):
        SynonymTable.load(p)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("He sounds furious and his face shows anger.", {"angry"}),
        ("She is not happy; she looks anxious and a bit sad.", {"worried", "sad"}),
        ("The speaker smiles joyfully, clearly delighted.", {"happy"}),
        ("A plain statement about the weather.", {"neutral"}),  # 'plain' is in the neutral group
        ("", set()),
        (None, set()),
    ],
)
def test_lexicon_extraction(text, expected):
    assert LexiconJudge().emotions(text) == expected


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        ({"angry", "sad"}, {"angry"}, (0.5, 1.0)),
        ({"happy"}, {"angry", "sad"}, (0.0, 0.0)),
        (set(), {"angry"}, (0.0, 0.0)),  # empty prediction scores 0
        ({"angry"}, {"angry", "worried"}, (1.0, 0.5)),
    ],
)
def test_set_precision_recall(pred, ref, expected):
    assert set_precision_recall(pred, ref) == pytest.approx(expected)


def test_lexicon_reasoning_ratings_in_range():
    j = LexiconJudge()
    same = j.rate_reasoning("The woman frowns and shouts angrily.", "The woman frowns and shouts angrily.")
    assert same == {"clue_overlap": 10.0, "label_overlap": 10.0}
    none = j.rate_reasoning("", "The woman frowns and shouts angrily.")
    assert none == {"clue_overlap": 1.0, "label_overlap": 1.0}
    part = j.rate_reasoning("She frowns; she is sad.", "The woman frowns and shouts angrily.")
    assert 1.0 < part["clue_overlap"] < 10.0 and part["label_overlap"] == 1.0


def test_chat_judge_against_local_server(monkeypatch, chat_server):
    monkeypatch.setenv("MOSEAR_API_KEY_TEST", "sk-test")
    with chat_server() as srv:
        j = make_judge(JudgeConfig(kind="openai", base_url=srv.url, model="judge-1", api_key_env="MOSEAR_API_KEY_TEST"))
        assert isinstance(j, ChatJudge)
        assert j.emotions("He was furious, then joyful.") == {"angry", "happy"}  # grouped by the table
        assert j.rate_reasoning("a", "b") == {"clue_overlap": 7.0, "label_overlap": 9.0}
        j.emotions("He was furious, then joyful.")  # cached: no new request
        assert len(srv.requests) == 2
        req = srv.requests[0]
        assert req["body"]["model"] == "judge-1" and req["body"]["temperature"] == 0
        assert req["auth"] == "Bearer sk-test"
        j.close()


def test_chat_judge_retries_server_errors(chat_server):
    with chat_server(fail_first=2) as srv:
        j = ChatJudge(JudgeConfig(kind="openai", base_url=srv.url, retries=2, backoff_s=0.01))
        assert j.emotions("quite worried") == {"worried"}
        assert len(srv.requests) == 3


def test_unreachable_endpoint_retries_then_clear_error():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    j = ChatJudge(JudgeConfig(kind="openai", base_url=f"http://127.0.0.1:{port}/v1", retries=2, backoff_s=0.01, timeout_s=2))
    with pytest.raises(JudgeUnavailable, match=rf"127\.0\.0\.1:{port}/v1/chat/completions unreachable after 3 attempts"):
        j.emotions("furious")


def test_client_error_is_not_retried(chat_server):
    with chat_server() as srv:
        j = ChatJudge(JudgeConfig(kind="openai", base_url=srv.url.replace("/v1", "/v2"), retries=3, backoff_s=0.01))
        with pytest.raises(JudgeUnavailable, match="HTTP 404"):
            j.emotions("furious")
        assert len(srv.requests) == 1


def test_chat_judge_disk_cache_is_shared(tmp_path, chat_server):
    with chat_server() as srv:
        cfg = JudgeConfig(kind="openai", base_url=srv.url)
        assert make_judge(cfg, cache_dir=tmp_path).emotions("furious") == {"angry"}
        assert len(list(tmp_path.glob("*.json"))) == 1
        other = make_judge(cfg, cache_dir=tmp_path)  # another unit / a rerun
        assert other.emotions("furious") == {"angry"} and len(srv.requests) == 1
        assert make_judge(cfg.model_copy(update={"model": "other"}), cache_dir=tmp_path).emotions("furious") == {"angry"}
        assert len(srv.requests) == 2  # another judge model is asked again


# ------------------------------------------------------------------ the set metric's reference and parity
# A worked table for MERTools' open-vocabulary formula (AffectGPT v1, the protocol CA-MER scores with):
#   Accuracy_s = mean over items of |G∩P| / |P|,  Recall_s = mean over items of |G∩P| / |G|,
#   an item with an empty P scores 0 on both. Values worked by hand:
#   item  G                      P                         |G∩P|  |P|  |G|  acc   rec
#   a     {happy}                {happy}                   1      1    1    1     1
#   b     {sad, worried}         {sad}                     1      1    2    1     1/2
#   c     {angry}                {angry, disgust, sad}     1      3    1    1/3   1
#   d     {fear}                 {}                        0      0    1    0     0
#   e     {surprise, happy}      {neutral, happy}          1      2    2    1/2   1/2
#   Accuracy_s = (1 + 1 + 1/3 + 0 + 1/2) / 5 = 17/30;  Recall_s = (1 + 1/2 + 1 + 0 + 1/2) / 5 = 3/5
WORKED = [
    ({"happy"}, {"happy"}, 1.0, 1.0),
    ({"sad", "worried"}, {"sad"}, 1.0, 0.5),
    ({"angry"}, {"angry", "disgust", "sad"}, 1 / 3, 1.0),
    ({"fear"}, set(), 0.0, 0.0),
    ({"surprise", "happy"}, {"neutral", "happy"}, 0.5, 0.5),
]


def test_set_metric_reproduces_the_mertools_formula_on_a_worked_table(tmp_path):
    import json as _json

    from mosear.evaluate.aggregate import compute_metrics
    from mosear.evaluate.units import write_table

    for g, p, acc, rec in WORKED:
        assert set_precision_recall(p, g) == pytest.approx((acc, rec))
    rows = [{"unit_id": "u", "checkpoint": "ck", "benchmark": "b", "setting": "ar_off", "ar": False, "key": f"k{i}",
             "subset": "video_aligned", "label": "sad", "pred_label": "sad", "labels": ["sad"], "reference": "r",
             "ref_emotions": sorted(g), "pred_emotions": sorted(p),
             "ov_precision": set_precision_recall(p, g)[0], "ov_recall": set_precision_recall(p, g)[1]}
            for i, (g, p, _, _) in enumerate(WORKED)]
    meta = {"unit_id": "u", "checkpoint": "ck", "benchmark": "b", "labels": ["sad"],
            "setting": {"name": "ar_off", "ar": False, "ar_fraction": None, "drop": None}}
    write_table(rows, tmp_path / "units" / "ck__b__ar_off__u.parquet", {"mosear.unit": _json.dumps(meta)})
    m = compute_metrics(tmp_path).query("subset == 'all'").set_index("metric")["value"]
    assert m["ov_precision"] == pytest.approx(17 / 30) and m["ov_recall"] == pytest.approx(3 / 5)
    assert m["ov_mean"] == pytest.approx((17 / 30 + 3 / 5) / 2) and m["ov_items"] == 5
    assert m["judge_errors"] == 0


def test_a_cue_following_answer_scores_zero_on_a_video_aligned_item(tmp_path):
    """The mined reasoning of a video-aligned clip names the voice's misleading emotion; the reference is
    the label, so following the voice scores 0 and reading the face scores 1."""
    import dataclasses
    import json as _json

    from mosear.evaluate.benchmark_files import load_benchmark
    from mosear.evaluate.config import BenchmarkSpec
    from mosear.evaluate.runner import judge_item
    from mosear.mine.captions import build_caption

    caption = build_caption({"label": "sad", "subset": "video_aligned", "audio_pred": "fear", "visual_pred": "sad",
                             "visual_desc": {"face": True, "intensity": 0.2}, "audio_desc": None, "text_desc": None})
    assert "fear" in caption  # the text a reference used to be extracted from
    entry = {"reason": caption, "label": "sad", "split": "test"}
    for folder in (tmp_path, tmp_path / "test"):  # the export layout: every split at the top, and per split
        folder.mkdir(exist_ok=True)
        for s in ("video_aligned", "audio_aligned", "consistent"):
            (folder / f"{s}.json").write_text(_json.dumps({"ravdess__x": entry} if s == "video_aligned" else {}))
    [item] = load_benchmark(BenchmarkSpec(name="m", format="mined", path=str(tmp_path))).items
    assert item.split == "test"
    judge = LexiconJudge()
    follows_voice = judge_item(judge, item, "The trembling voice shows she is afraid.")
    reads_face = judge_item(judge, item, "Her downcast face shows she is sad.")
    assert follows_voice["ref_emotions"] == ["sad"] and follows_voice["ref_source"] == "label"
    assert (follows_voice["ov_precision"], follows_voice["ov_recall"]) == (0.0, 0.0)
    assert (reads_face["ov_precision"], reads_face["ov_recall"]) == (1.0, 1.0)
    # open-vocabulary labels join the label; reasoning-only items (no label) fall back to their text
    ov = dataclasses.replace(item, ov_labels=("downcast",))
    assert judge_item(judge, ov, "downcast and sad")["ref_emotions"] == sorted({"sad", judge.table.group("downcast")})
    text_only = dataclasses.replace(item, label=None, subset=None, reference="She is furious.")
    assert judge_item(judge, text_only, "angry")["ref_source"] == "text"


def test_unreadable_judge_replies_are_judge_errors_not_empty_sets(tmp_path, chat_server):
    import json as _json

    from mosear.evaluate.aggregate import compute_metrics
    from mosear.evaluate.benchmark_files import BenchmarkItem
    from mosear.evaluate.judges import JudgeReplyError
    from mosear.evaluate.runner import judge_item
    from mosear.evaluate.units import write_table

    with chat_server(garble=True) as srv:
        j = make_judge(JudgeConfig(kind="openai", base_url=srv.url), cache_dir=tmp_path / "cache")
        with pytest.raises(JudgeReplyError, match="without a JSON list of emotion words"):
            j.emotions("He was furious.")
        with pytest.raises(JudgeReplyError, match="without clue_overlap and label_overlap"):
            j.rate_reasoning("a", "b")
        assert not list((tmp_path / "cache").glob("*.json"))  # not cached: a rerun asks again
        assert j.emotions("") == set()  # nothing to extract: no request, no error
        item = BenchmarkItem("k", "sad", "video_aligned", "The face is sad.")
        got = judge_item(j, item, "She is sad.", rate=True)
        assert set(got) == {"judge_error"} and "JSON list" in got["judge_error"]
    rows = [{"unit_id": "u", "checkpoint": "ck", "benchmark": "b", "setting": "ar_off", "key": f"k{i}",
             "subset": "video_aligned", "label": "sad", "pred_label": "sad", "reference": "r",
             **(got if i < 2 else {"ov_precision": 1.0, "ov_recall": 1.0, "ref_emotions": ["sad"]})}
            for i in range(3)]
    meta = {"unit_id": "u", "checkpoint": "ck", "benchmark": "b", "labels": ["sad"],
            "setting": {"name": "ar_off", "ar": False, "ar_fraction": None, "drop": None}}
    write_table(rows, tmp_path / "res" / "units" / "ck__b__ar_off__u.parquet", {"mosear.unit": _json.dumps(meta)})
    m = compute_metrics(tmp_path / "res").query("subset == 'all'").set_index("metric")["value"]
    assert m["judge_errors"] == 2 and m["ov_items"] == 1 and m["ov_precision"] == 1.0  # not averaged in as 0


def test_a_mined_items_own_training_caption_scores_one():
    """The bug (issue 21): the set metric scored the project's own target caption at precision 0.5, because
    the lexicon judge counted the emotion words of the misleading-cue sentence ("The voice sounds fearful, but
    that cue is misleading.") and of the quoted transcript. Every subset x label x cue of the caption builder,
    judged against the item's label: precision = recall = 1."""
    from mosear.evaluate.judges import LexiconJudge, reference_set, set_precision_recall
    from mosear.labels import CANONICAL_LABELS
    from mosear.mine.captions import build_caption

    judge = LexiconJudge()
    checked = 0
    for subset in ("consistent", "video_aligned", "audio_aligned"):
        for label in CANONICAL_LABELS:
            for other in CANONICAL_LABELS:
                if (subset == "consistent") != (other == label):
                    continue
                face, voice = (label, other) if subset != "audio_aligned" else (other, label)
                for transcript in ("I would like a new alarm clock.", "Dogs are sitting by the door", None):
                    row = {"label": label, "subset": subset,
                           "face_cue": {"label": face, "score": 0.8, "source": "cross-fitted face classifier"},
                           "voice_cue": {"label": voice, "score": 0.7, "source": "visual-only human ratings"},
                           "visual_desc": {"face": True, "intensity": 0.7},
                           "audio_desc": {"pitch_var": 0.25, "loudness": 1.7, "rate": 4.5, "hnr_db": 3.0},
                           "text_desc": {"transcript": transcript} if transcript else None}
                    caption = build_caption(row)
                    g, _src = reference_set(judge.table, label)
                    p, r = set_precision_recall(judge.emotions(caption), g)
                    assert (p, r) == (1.0, 1.0), (caption, judge.emotions(caption), g)
                    checked += 1
    assert checked > 300
