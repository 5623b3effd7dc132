"""95 % group-bootstrap intervals for every metric of one prediction table, vectorised.

:func:`unit_intervals` draws the resamples of :func:`mosear.evaluate.intervals.bootstrap` (same seed,
same draws: groups resampled with replacement, all rows of a group move together) once per table and
evaluates every statistic on every resample as weighted sums: with ``W`` the ``[n_boot, n_rows]``
matrix of how often each row is drawn,

- accuracy (= WAR) of a subset ``s``: ``W @ (hit · m_s) / W @ m_s``;
- UAR: per reference class ``c`` of the subset, ``recall_c = W @ (hit · [y=c]) / W @ [y=c]``, averaged
  over the classes drawn (support > 0) in each resample;
- weighted F1: ``F1_c = 2 TP_c / (support_c + predicted_c)``, averaged with weights ``support_c``;
- conflict gap ``acc(audio_aligned) − acc(video_aligned)`` and conflict-mean ``(acc(audio_aligned) +
  acc(video_aligned)) / 2`` on the same resample (their parts are correlated through shared groups);
- preference on spliced rows (``face_rate``, ``voice_rate``, ``neither_rate``, ``preference_index``):
  ``W @ [answer = face cue] / W @ [scored]`` and the like, on subset ``spliced``;
- the open-vocabulary set metric (``ov_precision``, ``ov_recall``, their mean) and attention shares:
  weighted means over the rows that have them.

A resample where a statistic is undefined (its subset drawn empty) is left out of that statistic's
percentiles, as in :func:`~mosear.evaluate.intervals.bootstrap`. Cost: ``n_boot × n_rows`` weights in
blocks of 256 resamples and a few matrix products per subset; 2000 resamples of a 1000-row table with
4 subsets and 11 classes: 52 statistics in 0.54 s, against 2.6 s for the loop bootstrap of overall
accuracy alone (``benchmarks/interval_cost.py``, 2 cores at load average 47).

Groups: the table's ``group`` column (clips that share a face or voice source, see
:mod:`mosear.evaluate.benchmark_files`) where present, else each key is its own group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mosear.evaluate.intervals import (N_BOOT, can_resample, crossed_group, group_codes, n_units,
                                      percentile_bounds, resample_weights, resampling_groups)

__all__ = ["unit_intervals", "resampling_groups"]

UNPARSED = "<unparsed>"  # same stand-in as mosear.evaluate.metrics.UNPARSED


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def unit_intervals(df: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
                   ) -> dict[tuple[str, str], tuple[float, float]]:
    """``{(subset, metric): (ci_low, ci_high)}`` for the metrics :mod:`.aggregate` reports of ``df``.

    ``subset`` is ``all`` or a value of ``df.subset``; metrics: ``accuracy, war, uar, weighted_f1,
    ov_precision, ov_recall, ov_mean, share_audio, share_visual, share_text`` per subset and
    ``conflict_gap, conflict_mean`` (subset ``all``). Statistics the table cannot define are absent.
    """
    n = len(df)
    if n == 0:
        return {}
    ok = df["error"].isna().to_numpy() if "error" in df else np.ones(n, bool)
    lab = ok & df["label"].notna().to_numpy()
    y = df["label"].astype(str).to_numpy()
    p = df["pred_label"].where(df["pred_label"].notna(), UNPARSED).astype(str).to_numpy()
    hit = (lab & (y == p)).astype(np.float64)
    subsets: dict[str, np.ndarray] = {"all": np.ones(n, bool)}
    if "subset" in df:
        for s in sorted(df["subset"].dropna().unique()):
            subsets[str(s)] = (df["subset"] == s).to_numpy()
    means = {c: df[c].to_numpy(dtype=np.float64) for c in
             ("ov_precision", "ov_recall", "share_audio", "share_visual", "share_text") if c in df}

    # Per subset: the 0/1 vectors whose weighted sums give each statistic.
    plans = {}
    for s, sm in subsets.items():
        m = (lab & sm).astype(np.float64)
        classes = sorted(set(y[lab & sm]))
        Y = np.stack([(y == c) & lab & sm for c in classes], 1).astype(np.float64) if classes else None
        P = np.stack([(p == c) & lab & sm for c in classes], 1).astype(np.float64) if classes else None
        mean_vecs = {}
        for c, x in means.items():
            has = ok & sm & ~np.isnan(x)
            if has.any():
                mean_vecs[c] = (np.where(has, x, 0.0), has.astype(np.float64))
        plans[s] = (m, Y, P, mean_vecs)

    reps: dict[tuple[str, str], list[np.ndarray]] = {}

    def add(key: tuple[str, str], value: np.ndarray) -> None:
        reps.setdefault(key, []).append(value)

    pref = None
    if "face_label" in df and "voice_label" in df:
        from mosear.evaluate.metrics import preference_rows

        pm = preference_rows(df).to_numpy()
        if pm.any():
            fv = (pm & (p == df["face_label"].astype(str).to_numpy())).astype(np.float64)
            vv = (pm & (p == df["voice_label"].astype(str).to_numpy())).astype(np.float64)
            pref = (pm.astype(np.float64), fv, vv)
    codes = group_codes(df, resampling_groups(df))
    if not can_resample(codes):  # one group: no spread to measure; NaN bounds, never zero-width ones
        return {}

    def spread(mask: np.ndarray) -> bool:
        """Whether the rows a statistic reads are made of >= 2 different units (else every resample that
        defines it gives the same value: a zero-width interval that would pass for certainty)."""
        return bool(mask.any()) and len(np.unique(codes[mask], axis=0)) >= 2

    varied = {s: spread(lab & sm) for s, sm in subsets.items()}
    for s, sm in subsets.items():
        plan = plans[s]
        if not varied[s]:  # keep the share/set-metric means only where their own rows vary
            plans[s] = (np.zeros_like(plan[0]), None, None,
                        {c: v for c, v in plan[3].items() if spread(v[1] > 0)})
        else:
            plans[s] = (plan[0], plan[1], plan[2], {c: v for c, v in plan[3].items() if spread(v[1] > 0)})
    conflicts = [subsets[s] for s in ("audio_aligned", "video_aligned") if s in subsets]
    gap_ok = len(conflicts) == 2 and spread(lab & (conflicts[0] | conflicts[1]))
    if pref is not None and not spread(pref[0] > 0):
        pref = None
    for W in resample_weights(codes, n_boot, seed):
        acc_of: dict[str, np.ndarray] = {}
        for s, (m, Y, P, mean_vecs) in plans.items():
            if m.any():
                acc = _ratio(W @ (hit * m), W @ m)
                acc_of[s] = acc
                add((s, "accuracy"), acc)
                add((s, "war"), acc)
                supp, tp, pred = W @ Y, W @ (Y * P), W @ P  # [b, C]
                rec = _ratio(tp, supp)  # NaN for a class not drawn in that resample: left out of the mean
                drawn = (~np.isnan(rec)).sum(1)
                add((s, "uar"), _ratio(np.nansum(rec, 1), drawn.astype(np.float64)))
                f1 = np.where(supp + pred > 0, 2 * tp / np.where(supp + pred > 0, supp + pred, 1.0), 0.0)
                add((s, "weighted_f1"), _ratio((supp * f1).sum(1), supp.sum(1)))
            for c, (x, has) in mean_vecs.items():
                add((s, c), _ratio(W @ x, W @ has))
            if "ov_precision" in mean_vecs and "ov_recall" in mean_vecs:
                add((s, "ov_mean"), (reps[(s, "ov_precision")][-1] + reps[(s, "ov_recall")][-1]) / 2)
        if pref is not None:
            den = W @ pref[0]
            face, voice = _ratio(W @ pref[1], den), _ratio(W @ pref[2], den)
            add(("spliced", "face_rate"), face)
            add(("spliced", "voice_rate"), voice)
            add(("spliced", "neither_rate"), 1.0 - face - voice)
            add(("spliced", "preference_index"), voice - face)
        if gap_ok and "audio_aligned" in acc_of and "video_aligned" in acc_of:
            add(("all", "conflict_gap"), acc_of["audio_aligned"] - acc_of["video_aligned"])
            add(("all", "conflict_mean"), (acc_of["audio_aligned"] + acc_of["video_aligned"]) / 2)
    units = n_units(codes)
    return {k: percentile_bounds(np.concatenate(v), level, units) for k, v in reps.items()}
