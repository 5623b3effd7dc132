"""The vectorised intervals of every metric equal the plain group bootstrap (same draws) computed with
the metric functions themselves (sklearn's F1 and recall), on a table with groups, errors and unparsed rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mosear.evaluate import metrics as M
from mosear.evaluate.intervals import bootstrap
from mosear.evaluate.resampled import resampling_groups, unit_intervals

LABELS = ["neutral", "angry", "happy", "sad", "fear"]
SUBSETS = ["consistent", "video_aligned", "audio_aligned"]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 60
    label = rng.choice(LABELS, n)
    pred = np.where(rng.random(n) < 0.55, label, rng.choice(LABELS, n)).astype(object)
    pred[rng.random(n) < 0.08] = None  # unparsed
    df = pd.DataFrame({
        "key": [f"k{i:02d}" for i in range(n)], "label": label, "pred_label": pred,
        "subset": rng.choice(SUBSETS, n), "group": [f"g{i // 3}" if i % 4 else None for i in range(n)],
        "error": [("broken" if i % 17 == 5 else None) for i in range(n)],
        "ov_precision": np.where(rng.random(n) < 0.7, rng.random(n), np.nan),
        "share_audio": rng.random(n),
    })
    df["ov_recall"] = np.where(df["ov_precision"].notna(), rng.random(n), np.nan)
    return df


N_BOOT = 60  # enough for exact equality of the percentiles; the loop is the slow side


def _all_stats(d: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Every statistic on one (resampled) table, with the metric functions themselves."""
    per = M.subset_scores(d)
    out = {("all", "conflict_gap"): M.conflict_gap(per), ("all", "conflict_mean"): M.conflict_mean(per)}
    ok = d[d["error"].isna()]
    for s in ["all", *SUBSETS]:
        for metric in ("accuracy", "uar", "weighted_f1"):
            out[(s, metric)] = per.get(s, {}).get(metric, np.nan) if per.get(s, {}).get("n") else np.nan
        g = ok if s == "all" else ok[ok["subset"] == s]
        for col in ("ov_precision", "ov_recall", "share_audio"):
            x = g[col].dropna()
            out[(s, col)] = float(x.mean()) if len(x) else np.nan
        out[(s, "ov_mean")] = (out[(s, "ov_precision")] + out[(s, "ov_recall")]) / 2
    return out


@pytest.fixture(scope="module")
def loop_bounds(table):
    """Percentile bounds of a plain loop over resampled DataFrames, drawn as ``bootstrap`` draws them."""
    from mosear.evaluate.intervals import group_codes

    codes = group_codes(table, resampling_groups(table))
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    rng = np.random.default_rng(0)
    reps: dict[tuple[str, str], list[float]] = {}
    for _ in range(N_BOOT):
        pick = rng.integers(0, len(members), len(members))
        for k, v in _all_stats(table.iloc[np.concatenate([members[g] for g in pick])]).items():
            reps.setdefault(k, []).append(v)
    from mosear.evaluate.intervals import expanded_level

    alpha = (1 - expanded_level(0.95, len(members))) / 2  # the small-sample expansion for these groups
    out = {}
    for k, v in reps.items():
        v = np.asarray(v, float)
        v = v[~np.isnan(v)]
        out[k] = tuple(np.quantile(v, [alpha, 1 - alpha])) if len(v) >= 2 else (np.nan, np.nan)
    return out


def test_vectorised_equals_loop_bootstrap(table, loop_bounds):
    ours = unit_intervals(table, n_boot=N_BOOT)
    checked = 0
    for key, bounds in loop_bounds.items():
        if np.isnan(bounds[0]):
            continue
        assert ours[key] == pytest.approx(bounds, abs=1e-9), key
        checked += 1
    assert checked >= 25


def test_same_draws_as_bootstrap(table):
    """The loop above is bootstrap's own: its accuracy interval matches ``bootstrap`` exactly."""
    groups = resampling_groups(table).tolist()

    def acc(d):
        ok = d[d["error"].isna()]
        return float((ok["label"] == ok["pred_label"]).mean()) if len(ok) else np.nan
    ref = bootstrap(table, acc, groups=groups, n_boot=N_BOOT)
    assert unit_intervals(table, n_boot=N_BOOT)[("all", "accuracy")] == pytest.approx((ref.ci_low, ref.ci_high), abs=1e-9)


def test_groups_move_together():
    """Eight clips per source, right or wrong together: the grouped interval is much wider."""
    hit = np.repeat(np.arange(10) % 2 == 0, 8)
    df = pd.DataFrame({"key": [f"k{i}" for i in range(80)], "label": "sad",
                       "pred_label": np.where(hit, "sad", "happy"), "subset": "consistent", "error": None})
    alone = unit_intervals(df)[("all", "accuracy")]
    grouped = unit_intervals(df.assign(group=np.repeat(np.arange(10), 8).astype(str)))[("all", "accuracy")]
    assert grouped[1] - grouped[0] > 2 * (alone[1] - alone[0])


def test_a_subset_of_one_persons_items_has_no_interval():
    """The bug (the main job on the many-faces sample): a subset holding one item (or items of one person only)
    got the interval [v, v] (every resample that defines it gives the same value), and the sentence then
    called a gap of -1.00 [-1.00, -1.00] from one item per subset a bias. Such statistics have no interval
    (NaN); subsets whose rows come from several people keep theirs."""
    from mosear.evaluate.intervals import crossed_group

    rows = [{"key": f"s{i}", "subset": "consistent", "label": "sad", "pred_label": "sad" if i % 4 < 2 else "happy",
             "group": crossed_group(f"p{i % 4}", f"p{i % 4}"), "error": None} for i in range(12)]
    rows += [{"key": "v0", "subset": "video_aligned", "label": "sad", "pred_label": "sad", "group": crossed_group("p0", "p0"),
              "error": None},
             {"key": "a0", "subset": "audio_aligned", "label": "sad", "pred_label": "happy", "group": crossed_group("p1", "p1"),
              "error": None}]
    iv = unit_intervals(pd.DataFrame(rows), n_boot=200)
    assert ("consistent", "accuracy") in iv and iv[("consistent", "accuracy")][0] < iv[("consistent", "accuracy")][1]
    for key in (("video_aligned", "accuracy"), ("audio_aligned", "accuracy"), ("all", "conflict_gap")):
        assert key not in iv, key
