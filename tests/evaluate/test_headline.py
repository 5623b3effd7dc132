"""The report's first table and its sentence follow the numbers: verdicts flip when the intervals do."""

from __future__ import annotations

import pandas as pd

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
