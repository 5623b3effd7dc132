"""The report's first table and its sentence follow the numbers: verdicts flip when the intervals do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mosear.evaluate.headline import headline_sentence, method_table, render_text

ROWS = [("consistent", "accuracy"), ("video_aligned", "accuracy"), ("audio_aligned", "accuracy"),
        ("all", "conflict_gap"), ("all", "conflict_mean"), ("all", "ov_mean")]


def _metrics(values: dict[str, list[tuple[float, float, float]]], n: int = 20) -> pd.DataFrame:
    rows = []
    for ck, vals in values.items():
        for (subset, metric), (v, lo, hi) in zip(ROWS, vals):
            rows.append({"checkpoint": ck, "benchmark": "b", "setting": "ar_off", "drop": None, "subset": subset,
                         "metric": metric, "value": v, "ci_low": lo, "ci_high": hi})
        for subset in ("consistent", "video_aligned", "audio_aligned"):
            rows.append({"checkpoint": ck, "benchmark": "b", "setting": "ar_off", "drop": None, "subset": subset,
                         "metric": "n", "value": n, "ci_low": None, "ci_high": None})
    return pd.DataFrame(rows)


def test_sentence_states_only_what_the_intervals_support():
    clear = _metrics({
        "lora": [(0.3, 0.05, 0.5), (0.2, 0.1, 0.3), (0.8, 0.7, 0.9), (0.6, 0.4, 0.8), (0.5, 0.4, 0.55), (0.4, 0.3, 0.5)],
        "mose": [(0.7, 0.5, 0.9), (0.6, 0.5, 0.7), (0.9, 0.8, 1.0), (0.3, -0.1, 0.5), (0.75, 0.65, 0.85), (0.5, 0.4, 0.6)],
    })
    t = method_table(clear, "b", {"LoRA": "lora/ar_off", "MoSE": "mose/ar_off"})
    assert list(t["method"]) == ["LoRA", "MoSE"]
    s = headline_sentence(t, n_labels=6)
    assert "MoSE has the highest consistent accuracy, 0.70 [0.50, 0.90], above chance (0.17 for 6 labels)" in s
    assert "its interval clear of LoRA's" in s
    assert "LoRA follows the voice (gap +0.60 [+0.40, +0.80])" in s and "MoSE shows no resolved bias" in s
    assert "rough" not in s  # 20 items per subset

    close = _metrics({
        "lora": [(0.3, 0.05, 0.5), (0.2, 0.1, 0.3), (0.8, 0.7, 0.9), (0.6, 0.4, 0.8), (0.5, 0.4, 0.7), (0.4, 0.3, 0.5)],
        "mose": [(0.2, 0.1, 0.4), (0.6, 0.5, 0.7), (0.9, 0.8, 1.0), (-0.3, -0.5, -0.1), (0.6, 0.5, 0.8), (0.5, 0.4, 0.6)],
    }, n=4)
    s = headline_sentence(method_table(close, "b"), n_labels=6)
    assert "not distinguishable from chance" in s and "overlapping" in s and "clear of" not in s
    assert "mose · ar_off follows the face" in s and "rough" in s  # no methods given: checkpoint · setting rows
    text = render_text(method_table(close, "b"))
    assert text.splitlines()[0].split()[:2] == ["method", "consistent"] and "+0.60 [+0.40, +0.80]" in text


def test_an_empty_subset_is_named_first_not_left_silently_empty():
    m = _metrics({"lora": [(0.5, 0.3, 0.7), (0.5, 0.2, 0.8), (0.4, 0.1, 0.7), (-0.1, -0.5, 0.3), (0.45, 0.2, 0.7),
                           (0.4, 0.3, 0.5)]})
    m.loc[(m["subset"] == "video_aligned") & (m["metric"] == "n"), "value"] = 0
    m = m[~((m["subset"] == "video_aligned") & (m["metric"] == "accuracy"))]
    s = headline_sentence(method_table(m, "b"), n_labels=6)
    assert s.startswith("Warning: this split has no video-aligned items, so that column is n/a"), s
    assert "n = 20/0/20" in s
    full = headline_sentence(method_table(_metrics({"lora": [(0.5, 0.3, 0.7)] * 6}), "b"), n_labels=6)
    assert not full.startswith("Warning")


def test_the_training_majority_row_tells_a_prior_from_a_signal():
    from mosear.evaluate.baseline import baseline_accuracy
    from mosear.evaluate.benchmark_files import BenchmarkItem

    items = ([BenchmarkItem(f"c{i}", "sad" if i < 15 else "happy", "consistent") for i in range(20)]
             + [BenchmarkItem(f"v{i}", "sad", "video_aligned") for i in range(20)]
             + [BenchmarkItem(f"a{i}", "happy", "audio_aligned") for i in range(20)])
    base = {"label": "sad", **baseline_accuracy(items, "sad")}
    assert base["subsets"]["consistent"]["value"] == 0.75 and base["subsets"]["video_aligned"]["value"] == 1.0
    assert base["conflict_gap"]["value"] == -1.0 and base["conflict_mean"]["value"] == 0.5
    assert base["subsets"]["consistent"]["ci_low"] < 0.75 < base["subsets"]["consistent"]["ci_high"]

    # a method at 0.70 [0.50, 0.90] on consistent: above chance, but the prior (0.75) explains it
    m = _metrics({"lora": [(0.7, 0.5, 0.9), (0.6, 0.5, 0.7), (0.9, 0.8, 1.0), (0.3, -0.1, 0.5), (0.75, 0.65, 0.85),
                           (0.5, 0.4, 0.6)]})
    t = method_table(m, "b", {"LoRA": "lora/ar_off"}, base)
    assert list(t["method"]) == ["LoRA", "train majority ('sad')"]
    s = headline_sentence(t, n_labels=6)
    assert "LoRA has the highest consistent accuracy" in s and "above chance" in s
    assert "not clear of the train majority ('sad') answer (0.75" in s and "the label prior alone explains it" in s
    assert "train majority ('sad') has the highest" not in s  # the baseline never wins a comparison
    assert "n/a" in render_text(t).splitlines()[-1]  # no set metric for the baseline

    # a method whose interval clears the prior's
    strong = {"label": "sad", **baseline_accuracy(items[20:] + items[:5], "sad")}  # consistent: 5 of 5 sad -> 1.0
    weak = {"label": "happy", **baseline_accuracy(items, "happy")}  # consistent 0.25
    s = headline_sentence(method_table(m, "b", {"LoRA": "lora/ar_off"}, weak), n_labels=6)
    assert "clear of the train majority ('happy') answer" in s and "not clear" not in s
    assert "not clear of" in headline_sentence(method_table(m, "b", {"LoRA": "lora/ar_off"}, strong), n_labels=6)


def test_a_constant_answer_is_no_resolved_bias():
    """The bug (issue 21): a predictor that always answers "happy", on subsets with different label mixes, was
    printed as "follows the voice (gap +0.55 [+0.29, +0.79])". Its gap is the training-majority answer's own:
    the verdict is made against that row, so it says no resolved bias."""
    from mosear.evaluate.aggregate import _unit_rows
    from mosear.evaluate.baseline import baseline_accuracy
    from mosear.evaluate.benchmark_files import BenchmarkItem

    rng = np.random.default_rng(0)
    items = ([BenchmarkItem(f"c{i}", rng.choice(["happy", "sad"]), "consistent", group=f"p{i % 10}") for i in range(40)]
             + [BenchmarkItem(f"v{i}", "happy" if i < 8 else "sad", "video_aligned", group=f"p{i % 10}") for i in range(40)]
             + [BenchmarkItem(f"a{i}", "happy" if i < 30 else "angry", "audio_aligned", group=f"p{i % 10}") for i in range(40)])
    df = pd.DataFrame([{"key": it.key, "subset": it.subset, "label": it.label, "pred_label": "happy", "group": it.group,
                        "error": None, "ov_precision": None, "ov_recall": None, "judge_error": None,
                        "clue_overlap": None, "label_overlap": None} for it in items])
    m = pd.DataFrame(_unit_rows(df, {"checkpoint": "const", "benchmark": "b", "unit_id": "u",
                                     "setting": {"name": "ar_off", "ar": False, "drop": None}}))
    gap = m[m["metric"] == "conflict_gap"].iloc[0]
    assert gap["value"] == pytest.approx(0.55) and gap["ci_low"] > 0  # alone, it looks like a voice bias
    base = {"label": "happy", **baseline_accuracy(items, "happy")}
    s = headline_sentence(method_table(m, "b", None, base), n_labels=6)
    assert "const · ar_off shows no resolved bias (gap +0.55" in s and "answer alone gives +0.55" in s
    assert "follows the voice" not in s
    # without the training-majority row the same numbers would read as a bias: the row is what decides
    assert "follows the voice" in headline_sentence(method_table(m, "b"), n_labels=6)


def test_ties_are_called_ties():
    """The bug (issue 24): with identical rows the sentence said "LoRA has the highest consistent accuracy"."""
    same = [(0.5, 0.3, 0.7), (0.5, 0.2, 0.8), (0.4, 0.1, 0.7), (-0.1, -0.5, 0.3), (0.45, 0.2, 0.7), (0.4, 0.3, 0.5)]
    t = method_table(_metrics({"lora": same, "mose": same}), "b", {"LoRA": "lora/ar_off", "MoSE": "mose/ar_off"})
    s = headline_sentence(t, n_labels=6)
    assert "LoRA and MoSE tie for the highest consistent accuracy (0.50 [0.30, 0.70], identical intervals)" in s
    assert "LoRA and MoSE tie for the highest conflict-mean" in s and "has the highest" not in s


def test_preference_table_and_verdict():
    """Splices have no true emotion: their table holds the rates of answers naming each cue, and the verdict
    on the preference index is made against the training-majority answer's index."""
    from mosear.evaluate.headline import preference_table, render_pref_text

    rows = []
    for ck, (face, voice, idx) in {"lora": ((0.1, 0.0, 0.2), (0.9, 0.8, 1.0), (0.8, 0.6, 1.0)),
                                   "mose": ((0.4, 0.2, 0.6), (0.5, 0.3, 0.7), (0.1, -0.3, 0.5))}.items():
        for metric, (v, lo, hi) in (("face_rate", face), ("voice_rate", voice), ("preference_index", idx),
                                    ("neither_rate", (1 - face[0] - voice[0], 0, 0.2))):
            rows.append({"checkpoint": ck, "benchmark": "b", "setting": "ar_off", "drop": None, "subset": "spliced",
                         "metric": metric, "value": v, "ci_low": lo, "ci_high": hi})
        rows.append({"checkpoint": ck, "benchmark": "b", "setting": "ar_off", "drop": None, "subset": "spliced",
                     "metric": "pref_n", "value": 30, "ci_low": None, "ci_high": None})
    m = pd.concat([_metrics({"lora": [(0.5, 0.3, 0.7)] * 6, "mose": [(0.5, 0.3, 0.7)] * 6}), pd.DataFrame(rows)])
    methods = {"LoRA": "lora/ar_off", "MoSE": "mose/ar_off"}
    pref = preference_table(m, "b", methods)
    assert list(pref["method"]) == ["LoRA", "MoSE"] and list(pref["n"]) == [30, 30]
    text = render_pref_text(pref)
    assert text.splitlines()[0].split()[:4] == ["method", "splices", "face", "voice"] and "+0.80 [+0.60, +1.00]" in text
    s = headline_sentence(method_table(m, "b", methods), 6, pref)
    assert "LoRA follows the voice (preference index +0.80" in s and "MoSE shows no resolved bias (preference index" in s
    assert "30 splices" in s
