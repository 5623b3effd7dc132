"""Closed-set metrics, conflict gap, flip rate and attention shares on small hand-checked tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mosear.evaluate import metrics as M


def test_closed_set_scores_by_hand():
    y = ["happy", "happy", "sad", "sad", "angry", "angry"]
    p = ["happy", "sad", "sad", None, "angry", "angry"]
    s = M.closed_set_scores(y, p)
    assert s["n"] == 6 and s["unparsed"] == 1
    assert s["accuracy"] == pytest.approx(4 / 6) and s["war"] == s["accuracy"]
    # recalls: happy 1/2, sad 1/2, angry 2/2 -> UAR 2/3
    assert s["uar"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # F1: happy P=1 R=.5 -> 2/3; sad P=.5 R=.5 -> .5; angry 1 -> weights 1/3 each
    assert s["weighted_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_all_unparsed_never_crashes():
    s = M.closed_set_scores(["happy", "sad"], [None, None])
    assert s["accuracy"] == 0 and s["unparsed"] == 2 and s["uar"] == 0


def test_empty_group_is_nan():
    s = M.closed_set_scores([], [])
    assert s["n"] == 0 and math.isnan(s["accuracy"])


def _table():
    return pd.DataFrame({
        "key": list("abcdefg"),
        "subset": ["audio_aligned"] * 3 + ["video_aligned"] * 2 + ["consistent", "consistent"],
        "label": ["happy", "sad", "sad", "angry", "angry", "happy", None],
        "pred_label": ["happy", "sad", None, "angry", "happy", "happy", "sad"],
        "error": [None, None, None, None, None, "sample not in shards", None],
    })


def test_subset_scores_and_gap():
    per = M.subset_scores(_table())
    # error row (f) and the label-less row (g) are out
    assert per["all"]["n"] == 5 and per["all"]["errors"] == 1 and per["all"]["unparsed"] == 1
    assert per["audio_aligned"]["accuracy"] == pytest.approx(2 / 3)
    assert per["video_aligned"]["accuracy"] == pytest.approx(1 / 2)
    assert per["consistent"]["errors"] == 1
    assert M.conflict_gap(per) == pytest.approx(2 / 3 - 1 / 2)
    assert math.isnan(M.conflict_gap({"all": per["all"]}))


def test_flip_rate_counts_unparsed_as_a_value():
    base = pd.DataFrame({"key": ["a", "b", "c", "d"], "pred_label": ["happy", None, "sad", None], "error": [None] * 4})
    abl = pd.DataFrame({"key": ["a", "b", "c", "e"], "pred_label": ["happy", "sad", "angry", "x"], "error": [None] * 4})
    fr = M.flip_rate(base, abl)
    assert {k: fr[k] for k in ("n", "flip_rate")} == {"n": 3, "flip_rate": pytest.approx(2 / 3)}
    assert fr["ci"][0] <= 2 / 3 <= fr["ci"][1]


def test_attention_shares_mean_of_monitored_rows():
    df = pd.DataFrame({"share_audio": [0.5, 0.3, None], "share_visual": [0.2, 0.4, None], "share_text": [0.3, 0.3, None]})
    assert M.attention_shares(df) == pytest.approx({"audio": 0.4, "visual": 0.3, "text": 0.3})


def test_confusion_has_unparsed_column():
    cm, cols = M.confusion(_table(), ["happy", "sad", "angry"])
    assert cols[-1] == M.UNPARSED and cm.shape == (3, 4)
    assert cm[1, 3] == 1  # sad -> unparsed
    assert cm.sum() == 5
