"""Intervals: coverage on a known mean, groups move together, t-interval over seeds against scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mosear.evaluate.intervals import bootstrap, bootstrap_se, seed_interval


def _acc(d: pd.DataFrame) -> float:
    return float(d["hit"].mean()) if len(d) else float("nan")


def test_bootstrap_covers_the_true_rate():
    """Nominal 95 %: over 200 Bernoulli(0.7) samples of 80 items, the interval holds 0.7 about 95 % of the time."""
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        df = pd.DataFrame({"hit": rng.random(80) < 0.7})
        iv = bootstrap(df, _acc, n_boot=400)
        covered += iv.ci_low <= 0.7 <= iv.ci_high
        assert iv.ci_low <= iv.value <= iv.ci_high
    assert 0.88 <= covered / 200 <= 0.99


def test_groups_widen_the_interval_when_clips_share_a_source():
    # 10 sources, 8 clips each, every clip of a source right or wrong together: 10 effective items, not 80
    hit = np.repeat(np.arange(10) % 2 == 0, 8)
    df = pd.DataFrame({"hit": hit, "src": np.repeat(np.arange(10), 8)})
    by_clip, by_group = bootstrap(df, _acc), bootstrap(df, _acc, groups="src")
    assert by_group.n_groups == 10 and by_clip.n_groups == 80
    assert (by_group.ci_high - by_group.ci_low) > 2 * (by_clip.ci_high - by_clip.ci_low)
    assert bootstrap_se(df, _acc, groups="src") > 2 * bootstrap_se(df, _acc)


def test_empty_and_undefined():
    iv = bootstrap(pd.DataFrame({"hit": []}), _acc)
    assert np.isnan(iv.value) and np.isnan(iv.ci_low) and str(iv) == "n/a"
    assert np.isnan(seed_interval([0.5]).ci_low) and seed_interval([0.5]).value == 0.5


def test_seed_interval_is_the_t_interval():
    x = [0.61, 0.72, 0.55, 0.68, 0.70]
    iv = seed_interval(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert iv.ci_low == pytest.approx(lo) and iv.ci_high == pytest.approx(hi) and iv.n == 5


def _crossed(faces: int = 5, voices: int = 6, seed: int = 0) -> pd.DataFrame:
    """Every face spliced with every voice (the sample's design); correctness depends on the face."""
    from mosear.evaluate.intervals import crossed_group

    rng = np.random.default_rng(seed)
    easy = rng.random(faces) < 0.5
    rows = [{"key": f"f{f}v{v}", "group": crossed_group(f"f{f}", f"v{v}"),
             "hit": float(easy[f] if rng.random() < 0.9 else not easy[f])} for f in range(faces) for v in range(voices)]
    return pd.DataFrame(rows)


def test_crossed_faces_and_voices_get_a_real_interval_not_a_zero_width_one():
    df = _crossed()
    iv = bootstrap(df, lambda d: d["hit"].mean(), groups="group")
    assert iv.ci_low < iv.value < iv.ci_high and iv.ci_high - iv.ci_low > 0.2  # 5 faces carry the spread
    # what the old grouping did: everything sharing a face or a voice joined -> one group -> no spread
    one = bootstrap(df.assign(g="all"), lambda d: d["hit"].mean(), groups="g")
    assert np.isnan(one.ci_low) and np.isnan(one.ci_high) and one.value == iv.value
    # clip-level resampling (ignoring the shared sources) is far too narrow
    naive = bootstrap(df, lambda d: d["hit"].mean())
    assert naive.ci_high - naive.ci_low < iv.ci_high - iv.ci_low


def test_vectorised_intervals_match_the_loop_bootstrap_on_a_crossed_table():
    from mosear.evaluate.resampled import unit_intervals

    df = _crossed(seed=3)
    t = pd.DataFrame({"key": df["key"], "group": df["group"], "label": "sad", "subset": "consistent",
                      "pred_label": np.where(df["hit"] > 0, "sad", "happy"), "error": None})
    lo, hi = unit_intervals(t)[("consistent", "accuracy")]
    loop = bootstrap(df, lambda d: d["hit"].mean(), groups="group")
    assert (lo, hi) == pytest.approx((loop.ci_low, loop.ci_high))
    assert unit_intervals(t.assign(group="face=a|voice=b")) == {}  # one face, one voice: no interval


def test_mined_source_groups_are_crossed_face_and_voice(tmp_path):
    from mosear.evaluate.benchmark_files import source_groups

    pd.DataFrame({"key": ["n1", "s1", "s2"], "face_take": ["A", "A", "B"],
                  "voice_take": ["A", "V1", None]}).to_parquet(tmp_path / "conflicts.parquet")
    assert source_groups(tmp_path / "conflicts.parquet") == {
        "n1": "face=A|voice=A", "s1": "face=A|voice=V1", "s2": "face=B|voice=s2"}


def test_the_percentile_level_expands_with_few_units():
    """The bug (issue 21): with 8 actors the plain 95 % percentile interval covered 0.88. The level is expanded
    for G units (Hesterberg): wider with few units, the nominal level with many, and a wider interval from the
    same resamples."""
    from mosear.evaluate.intervals import expanded_level, percentile_bounds

    assert expanded_level(0.95, 8) > 0.985 and expanded_level(0.95, 3) > expanded_level(0.95, 8)
    assert abs(expanded_level(0.95, 10_000) - 0.95) < 1e-3 and expanded_level(0.95, None) == 0.95
    reps = np.random.default_rng(0).normal(size=4000)
    lo8, hi8 = percentile_bounds(reps, units=8)
    lo, hi = percentile_bounds(reps)
    assert lo8 < lo and hi8 > hi


def test_a_table_of_one_unit_pattern_has_no_interval():
    """Every row made of the same two people: each resample weights all rows alike, so there is no spread to
    measure: NaN, never a zero-width interval."""
    from mosear.evaluate.intervals import can_resample, crossed_group, group_codes

    df = pd.DataFrame({"g": [crossed_group("a", "b")] * 5, "hit": [1, 0, 1, 1, 0]})
    assert not can_resample(group_codes(df, "g"))
    iv = bootstrap(df, lambda d: d["hit"].mean(), groups="g")
    assert np.isnan(iv.ci_low) and iv.value == 0.6
