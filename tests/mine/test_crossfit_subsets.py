"""Cross-fitting, subset assignment, human ratings and the training mix (table-driven where possible)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mosear.labels import CANONICAL_LABELS, label_index
from mosear.mine.assemble import train_mix
from mosear.mine.subsets import subset_quality, truth_subset
from mosear.mine.crossfit import choose_groups, crossfit_predict
from mosear.mine.subsets import assign_subset, cue_verdict, human_rated_probs, ratings_to_probs


def onehot(label: str, p: float = 0.8) -> np.ndarray:
    out = np.full(len(CANONICAL_LABELS), (1 - p) / (len(CANONICAL_LABELS) - 1), np.float32)
    out[label_index(label)] = p
    return out


NAN = np.full(len(CANONICAL_LABELS), np.nan, np.float32)


@pytest.mark.parametrize("label, audio, visual, expected", [
    ("happy", onehot("happy"), onehot("happy"), "consistent"),
    ("happy", onehot("sad"), onehot("happy"), "video_aligned"),
    ("happy", onehot("happy"), onehot("angry"), "audio_aligned"),
    ("happy", onehot("sad"), onehot("angry"), "ambiguous"),          # neither cue shows it
    ("happy", onehot("happy"), NAN, "ambiguous"),                   # no face: missing, kept
    ("happy", onehot("happy", 0.12), onehot("angry"), "ambiguous"),  # audio too unsure for the margin
    (None, onehot("happy"), onehot("happy"), "ambiguous"),           # unlabelled
])
def test_assign_subset(label, audio, visual, expected):
    assert assign_subset(label, audio, visual, margin=0.1)[0] == expected


def test_cue_verdict_margins():
    p = np.zeros(len(CANONICAL_LABELS), np.float32)
    p[label_index("sad")], p[label_index("happy")] = 0.5, 0.45
    assert cue_verdict(p, "sad", 0.1)[0] == "unsure" and cue_verdict(p, "sad", 0.01)[0] == "true"
    assert cue_verdict(p, "happy", 0.01)[0] == "other"
    assert cue_verdict(None, "sad", 0.1)[0] == "missing"


def test_crema_d_votes_make_human_rated_subsets():
    meta = {"extra": {"ratings": {"audio": {"votes": ["angry", "neutral", "neutral", "neutral"]},
                                  "visual": {"votes": ["angry", "angry", "angry", "happy"]}}}}
    a, v = human_rated_probs(meta)
    assert a[label_index("neutral")] == pytest.approx(0.75) and v[label_index("angry")] == pytest.approx(0.75)
    assert assign_subset("angry", a, v, 0.1)[0] == "video_aligned"
    assert ratings_to_probs({"label": "sad", "agreement": 0.6})[label_index("sad")] == pytest.approx(0.6)
    assert human_rated_probs({"extra": {}}) == (None, None)


def test_crossfit_predicts_out_of_fold_and_never_within_a_group():
    rng = np.random.default_rng(0)
    labels = ["happy", "sad", "angry"]
    n_groups, per = 12, 10
    groups = np.repeat([f"g{i}" for i in range(n_groups)], per)
    y = [labels[i % 3] for i in range(n_groups * per)]
    # Features that carry the label (plus noise) generalise across groups...
    X = np.stack([onehot(t, 0.9) for t in y]) * 3 + rng.normal(0, 0.5, (len(y), len(CANONICAL_LABELS)))
    res = crossfit_predict(X, y, list(groups), n_folds=4)
    assert res.n_folds == 4 and res.accuracy is not None and res.accuracy > 0.9
    assert np.allclose(np.nansum(res.probs, axis=1), 1.0, atol=1e-5)
    # ...while features that only identify the group, with a label per group, cannot be memorised:
    # each group is predicted by models that never saw it, so the accuracy falls to chance or below.
    y_group = [labels[int(g[1:]) % 3] for g in groups]
    X_id = np.stack([np.eye(n_groups)[int(g[1:])] for g in groups]) + rng.normal(0, 0.01, (len(y), n_groups))
    res_id = crossfit_predict(X_id, y_group, list(groups), n_folds=4)
    assert res_id.accuracy < 0.5
    # rows without evidence get no prediction; unlabelled rows are predicted but not trained on
    X[0] = np.nan
    y2 = list(y)
    y2[1] = None
    res2 = crossfit_predict(X, y2, list(groups), n_folds=4)
    assert np.isnan(res2.probs[0]).all() and not np.isnan(res2.probs[1]).any()


def test_groups_fall_back_to_takes_with_too_few_speakers():
    groups, how = choose_groups(["s1"] * 4, ["t1", "t2", "t3", "t4"], n_folds=3)
    assert groups == ["t1", "t2", "t3", "t4"] and how.startswith("source take")
    groups, how = choose_groups(["a", "b", "c"], ["t1", "t2", "t3"], n_folds=3)
    assert groups == ["a", "b", "c"] and how == "speaker"


def test_truth_and_quality_and_balanced_mix():
    rows = pd.DataFrame([
        {"key": "1", "shard": "s", "label": "sad", "face_label": "sad", "voice_label": "happy", "subset": "video_aligned", "caption": "c"},
        {"key": "2", "shard": "s", "label": "happy", "face_label": "sad", "voice_label": "happy", "subset": "video_aligned", "caption": "c"},
        {"key": "3", "shard": "s", "label": "sad", "face_label": "sad", "voice_label": "sad", "subset": "consistent", "caption": "c"},
        {"key": "4", "shard": "s", "label": "sad", "face_label": None, "voice_label": None, "subset": "consistent", "caption": "c"},
        {"key": "5", "shard": "s", "label": "sad", "face_label": None, "voice_label": None, "subset": "ambiguous", "caption": "c"},
    ])
    rows["truth_subset"] = [truth_subset(r) for r in rows.to_dict("records")]
    assert rows["truth_subset"].tolist()[:3] == ["video_aligned", "audio_aligned", "consistent"]
    q = subset_quality(rows)
    assert q["video_aligned"] == {"precision": 0.5, "recall": 1.0, "assigned": 2, "true": 1, "tp": 1}
    assert q["audio_aligned"]["recall"] == 0.0 and q["audio_aligned"]["precision"] is None
    mix = train_mix(rows)
    assert set(mix["key"]) == {"1", "2", "3", "4"}  # ambiguous left out by default
    totals = mix.groupby("subset")["weight"].sum()
    assert totals["video_aligned"] == pytest.approx(totals["consistent"]) and mix["weight"].mean() == pytest.approx(1.0)
    assert mix["target"].iloc[0].startswith("sad. ")


def test_one_class_fold_is_uninformative_not_certain():
    """Hold out g0 (happy and sad) and the other folds hold only happy: no classifier can be trained,
    so g0's rows get no prediction and land in `ambiguous`, never in a subset with p = 1."""
    rng = np.random.default_rng(1)
    y = ["happy", "sad"] * 5 + ["happy"] * 20
    groups = ["g0"] * 10 + ["g1"] * 10 + ["g2"] * 10
    X = rng.normal(0, 1, (len(y), 4)).astype(np.float32)
    res = crossfit_predict(X, y, groups, n_folds=3)
    assert res.uninformative[:10].all() and np.isnan(res.probs[:10]).all()
    assert any("one class" in n for n in res.notes)
    for i in range(10):  # a face that shows the true label is not enough: the voice cue is no cue
        assert assign_subset(y[i], res.probs[i], onehot(y[i], 0.9), margin=0.1)[0] == "ambiguous"
    assert res.n_scored == int((~np.isnan(res.probs).any(axis=1)).sum())
