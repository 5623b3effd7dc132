"""Closed-set metrics, the conflict gap and modality reliance, computed from prediction tables.

A prediction table (one unit's Parquet, see :mod:`mosear.evaluate.units`) has one row per benchmark
item with at least ``key, subset, label, pred_label``. ``pred_label`` is ``None`` when the model's
output parsed to no label: such rows count as wrong (they stay in the denominator) and are counted
separately as ``unparsed``; rows whose sample could not be evaluated at all (``error`` set) are
counted as ``errors`` and excluded from the scores.

Definitions (all over the rows of one subset; values in [0, 1]):
- accuracy = WAR (weighted average recall) = correct / n;
- weighted F1 = Σ_c (support_c / n) · F1_c over the classes present in the reference (MER2023);
- UAR (unweighted average recall) = mean over reference classes of recall_c (DFEW, MAFW);
- conflict gap = accuracy(audio_aligned) − accuracy(video_aligned) (CA-MER): positive when the model
  follows the voice over the face (audio bias), negative when it follows the face;
- conflict-mean = (accuracy(video_aligned) + accuracy(audio_aligned)) / 2: how well the model reads the
  conflicting items at all (a smaller gap bought by lower audio-aligned accuracy lowers it);
- flip rate (modality removal) = share of items whose label under the ablated setting differs from
  the label of the same checkpoint and benchmark with nothing removed (AR off);
- attention share = mean over items of each modality's share of attention mass (AR monitor mode);
- **preference** (spliced clips: one recording's face with another's voice, no true emotion; rows with
  ``face_label`` and ``voice_label`` and no ``label``, the two cues different): ``face_rate`` = share of
  answers naming the face's emotion, ``voice_rate`` the voice's, ``neither_rate`` neither (an unparsed
  answer is neither); the **preference index** = voice_rate − face_rate in [−1, 1]: +1 = always follows the
  voice, −1 = always the face. This is what a splice can measure (issue 21: which cue the answer followed);
  accuracy, F1 and the conflict subsets are computed only on items with a truth (``label`` set).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

__all__ = [
    "UNPARSED",
    "closed_set_scores",
    "subset_scores",
    "conflict_gap",
    "conflict_mean",
    "flip_rate",
    "attention_shares",
    "confusion",
    "preference",
    "preference_rows",
    "PREFERENCE_METRICS",
]

PREFERENCE_METRICS = ("face_rate", "voice_rate", "neither_rate", "preference_index")

# Stands in for "no label" in sklearn calls (which need strings); never a real label name.
UNPARSED = "<unparsed>"


def closed_set_scores(labels: Iterable[str], preds: Iterable[str | None]) -> dict[str, float]:
    """Accuracy (= WAR), weighted F1, UAR and counts for one group of rows.

    ``preds`` may hold ``None`` (unparsed output): counted wrong, reported in ``unparsed``.
    """
    y = [str(x) for x in labels]
    p = [UNPARSED if x is None or (isinstance(x, float) and np.isnan(x)) else str(x) for x in preds]
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    n = len(y)
    unparsed = sum(1 for x in p if x == UNPARSED)
    if n == 0:
        return {"n": 0, "unparsed": 0, "accuracy": float("nan"), "war": float("nan"),
                "uar": float("nan"), "weighted_f1": float("nan")}
    classes = sorted(set(y))  # reference classes: recall/F1 averaged over these only
    acc = float(accuracy_score(y, p))
    uar = float(recall_score(y, p, labels=classes, average="macro", zero_division=0))
    wf1 = float(f1_score(y, p, labels=classes, average="weighted", zero_division=0))
    return {"n": n, "unparsed": unparsed, "accuracy": acc, "war": acc, "uar": uar, "weighted_f1": wf1}


def subset_scores(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """:func:`closed_set_scores` for ``all`` rows and for each value of ``subset``.

    Rows with an ``error`` (sample missing or undecodable) are left out and counted in ``errors``;
    rows without a reference label (reasoning-only benchmarks) are left out.
    """
    err = df["error"].notna() if "error" in df else pd.Series(False, index=df.index)
    ok = df[~err & df["label"].notna()]  # reasoning-only items (no label) have no closed-set score
    out: dict[str, dict[str, float]] = {"all": {**closed_set_scores(ok["label"], ok["pred_label"]), "errors": int(err.sum())}}
    if "subset" in df and df["subset"].notna().any():
        for name in sorted(df["subset"].dropna().unique()):
            g = ok[ok["subset"] == name]
            out[str(name)] = {**closed_set_scores(g["label"], g["pred_label"]),
                              "errors": int((err & (df["subset"] == name)).sum())}
    return out


def conflict_gap(per_subset: dict[str, dict[str, float]]) -> float:
    """accuracy(audio_aligned) − accuracy(video_aligned); NaN when either subset is absent."""
    a = per_subset.get("audio_aligned", {}).get("accuracy", float("nan"))
    v = per_subset.get("video_aligned", {}).get("accuracy", float("nan"))
    return float(a - v)


def conflict_mean(per_subset: dict[str, dict[str, float]]) -> float:
    """(accuracy(video_aligned) + accuracy(audio_aligned)) / 2; NaN when either subset is absent."""
    a = per_subset.get("audio_aligned", {}).get("accuracy", float("nan"))
    v = per_subset.get("video_aligned", {}).get("accuracy", float("nan"))
    return float((a + v) / 2)


def flip_rate(base: pd.DataFrame, ablated: pd.DataFrame) -> dict[str, float]:
    """Share of items (joined on ``key``) whose predicted label changes when a modality is removed.

    An unparsed prediction is a value of its own: unparsed → label is a flip, unparsed → unparsed is not.
    Returns ``{"n": items compared, "flip_rate": share, "ci": (low, high)}`` (95 % bootstrap over the
    compared items, groups from the base table's ``group`` column where present).
    """
    from mosear.evaluate.intervals import group_codes, n_units, percentile_bounds, resample_weights, resampling_groups

    cols = ["key", "pred_label"] + (["group"] if "group" in base else [])
    b = base[base["error"].isna()][cols] if "error" in base else base[cols]
    acols = ["key", "pred_label"]
    a = ablated[ablated["error"].isna()][acols] if "error" in ablated else ablated[acols]
    j = b.merge(a, on="key", suffixes=("_base", "_abl"))
    if j.empty:
        return {"n": 0, "flip_rate": float("nan"), "ci": (float("nan"), float("nan"))}
    j["flip"] = (j["pred_label_base"].fillna(UNPARSED) != j["pred_label_abl"].fillna(UNPARSED)).astype(float)
    flip = j["flip"].to_numpy()
    codes = group_codes(j, resampling_groups(j))
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.concatenate([(w @ flip) / w.sum(1) for w in resample_weights(codes)])
    return {"n": int(len(j)), "flip_rate": float(flip.mean()), "ci": percentile_bounds(reps, units=n_units(codes))}


def preference_rows(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of the rows scored for preference: no error, no truth label, two different cues."""
    if "face_label" not in df or "voice_label" not in df:
        return pd.Series(False, index=df.index)
    ok = df["error"].isna() if "error" in df else pd.Series(True, index=df.index)
    return (ok & df["label"].isna() & df["face_label"].notna() & df["voice_label"].notna()
            & (df["face_label"] != df["voice_label"]))


def preference(df: pd.DataFrame) -> dict[str, float]:
    """``{"n", "face_rate", "voice_rate", "neither_rate", "preference_index"}`` over :func:`preference_rows`
    (module docstring); rates NaN when no row qualifies."""
    g = df[preference_rows(df)]
    n = len(g)
    if n == 0:
        return {"n": 0, **{k: float("nan") for k in PREFERENCE_METRICS}}
    pred = g["pred_label"].astype(object)
    face = float((pred == g["face_label"]).mean())
    voice = float((pred == g["voice_label"]).mean())
    return {"n": n, "face_rate": face, "voice_rate": voice, "neither_rate": 1.0 - face - voice,
            "preference_index": voice - face}


def attention_shares(df: pd.DataFrame) -> dict[str, float]:
    """Mean attention share per modality over the rows that were monitored (``share_*`` columns)."""
    out: dict[str, float] = {}
    for mod in ("audio", "visual", "text"):
        col = f"share_{mod}"
        if col in df and df[col].notna().any():
            out[mod] = float(df[col].dropna().mean())
    return out


def confusion(df: pd.DataFrame, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Confusion matrix (rows: reference, columns: prediction) over ``labels`` plus an unparsed column.

    Returns ``(matrix int64 [C, C+1], column names)``; error rows are left out.
    """
    ok = df[df["error"].isna()] if "error" in df else df
    cols = list(labels) + [UNPARSED]
    y = ok["label"].astype(str).tolist()
    p = ok["pred_label"].fillna(UNPARSED).astype(str).tolist()
    # predictions outside the label space are folded into the unparsed column for display
    p = [x if x in labels else UNPARSED for x in p]
    m = confusion_matrix(y, p, labels=cols) if y else np.zeros((len(cols), len(cols)), dtype=np.int64)
    return m[: len(labels)].astype(np.int64), cols
