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
    monkeypatch.setenv("MOSEAR_TEST_KEY", "sk-test")
    with chat_server() as srv:
        j = make_judge(JudgeConfig(kind="openai", base_url=srv.url, model="judge-1", api_key_env="MOSEAR_TEST_KEY"))
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
