"""CA-MER subset assignment (DESIGN.md §3) from per-modality label probabilities.

A modality's cue, with probabilities ``p`` over CANONICAL_LABELS and true label ``y``:

- *shows the true emotion* when ``argmax p == y`` and ``p[y] - max_{c != y} p[c] >= margin``;
- *shows another emotion* when ``argmax p != y`` and ``max p - p[y] >= margin``;
- otherwise it is *unsure* (or missing: NaN probabilities, e.g. no face, silent audio).

Subsets: ``consistent`` (audio and visual both show y), ``video_aligned`` (visual shows y, audio shows
another), ``audio_aligned`` (audio shows y, visual another); everything else is ``ambiguous`` and kept.
The row's ``margin`` is the smaller of the two modalities' decision margins (0 when one is missing).
These four are the *accuracy* subsets: only rows with a truth get them (natural clips, human-rated
clips). A counterfactual splice has no true emotion; its subset is ``spliced`` (:data:`SPLICED`) and it
is scored for preference (which cue the answer follows) from ``face_label`` / ``voice_label``.

Human-rated clips (per-modality ratings in ``meta.extra.ratings``, CREMA-D's summaryTable.csv): when the
ratings carry the audio-visual vote, **the audio-visual vote is the truth** (``label``; the acted label
stays in ``acted_label``) and the visual-only / audio-only votes are the cues: both show the AV emotion
-> consistent, only the face -> video_aligned, only the voice -> audio_aligned, else ambiguous. A tie
(several emotions share the top vote; summaryTable writes ``N:S``) makes that cue *unsure*; a tie in
the audio-visual vote leaves no truth: the acted label is kept and the row is ambiguous
(:func:`human_rated_subset`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mosear.labels import CANONICAL_LABELS, canonical_label, label_index

SUBSETS = ("consistent", "video_aligned", "audio_aligned", "ambiguous")
SPLICED = "spliced"  # the subset of every counterfactual splice: no truth, preference only


def cue_verdict(probs: np.ndarray | None, label: str, margin: float) -> tuple[str, float]:
    """``("true" | "other" | "unsure" | "missing", decision margin)`` for one modality."""
    if probs is None:
        return "missing", 0.0
    p = np.asarray(probs, np.float64)
    if p.size != len(CANONICAL_LABELS) or np.isnan(p).any() or p.sum() <= 0:
        return "missing", 0.0
    y = label_index(label)
    top = int(p.argmax())
    if top == y:
        m = float(p[y] - np.max(np.delete(p, y)))
        return ("true" if m >= margin else "unsure"), m
    m = float(p[top] - p[y])
    return ("other" if m >= margin else "unsure"), m


def assign_subset(label: str | None, audio_probs: Any, visual_probs: Any, margin: float = 0.1) -> tuple[str, float]:
    """Subset name and decision margin for one clip (``ambiguous`` when unlabelled)."""
    if not label:
        return "ambiguous", 0.0
    a, ma = cue_verdict(audio_probs, label, margin)
    v, mv = cue_verdict(visual_probs, label, margin)
    m = min(ma, mv) if "missing" not in (a, v) else 0.0
    if a == "true" and v == "true":
        return "consistent", m
    if v == "true" and a == "other":
        return "video_aligned", m
    if a == "true" and v == "other":
        return "audio_aligned", m
    return "ambiguous", m


def ratings_to_probs(rating: Any) -> np.ndarray | None:
    """Human ratings of one modality -> float32[11] vote shares over CANONICAL_LABELS.

    Accepts ``{"votes": [label, ...]}`` (one label per rater, CREMA-D's per-modality votes as the shard
    stage stores them), ``{label: votes}``, or ``{"label": name, "agreement": share}`` (the majority label
    and its share; the rest of the mass is spread evenly over the other labels).
    """
    if not isinstance(rating, dict) or not rating:
        return None
    out = np.zeros(len(CANONICAL_LABELS), np.float32)
    if isinstance(rating.get("votes"), list):
        for raw in rating["votes"]:
            lbl = canonical_label(raw)
            if lbl is not None:
                out[label_index(lbl)] += 1.0
        return out / out.sum() if out.sum() > 0 else None
    if "label" in rating:
        lbl = canonical_label(rating["label"])
        if lbl is None:
            return None
        share = float(rating.get("agreement", rating.get("level", 1.0)) or 0.0)
        share = min(max(share, 0.0), 1.0)
        out[:] = (1.0 - share) / (len(out) - 1)
        out[label_index(lbl)] = share
        return out
    for raw, votes in rating.items():
        lbl = canonical_label(raw)
        if lbl is not None:
            out[label_index(lbl)] += float(votes)
    return out / out.sum() if out.sum() > 0 else None


def rating_tie(rating: Any) -> bool:
    """Several emotions share one modality's top vote (summaryTable.csv's ``N:S``)."""
    p = ratings_to_probs(rating)
    return p is not None and int((p >= p.max() - 1e-9).sum()) > 1


def human_rated_subset(acted: str | None, ratings: dict[str, Any], margin: float = 0.1
                       ) -> tuple[str, float, str | None, dict[str, bool]]:
    """``(subset, margin, truth label, ties per modality)`` of a human-rated clip (module docstring).

    Without an ``audio_visual`` rating the acted label is the truth (the cues are still the votes)."""
    ha, hv = ratings_to_probs(ratings.get("audio")), ratings_to_probs(ratings.get("visual"))
    ties = {m: rating_tie(ratings.get(m)) for m in ("audio", "visual", "audio_visual")}
    if "audio_visual" not in ratings:
        subset, m = assign_subset(acted, ha, hv, margin)
        return subset, m, acted, ties
    hav = ratings_to_probs(ratings.get("audio_visual"))
    if hav is None or ties["audio_visual"]:
        return "ambiguous", 0.0, acted, ties
    truth = CANONICAL_LABELS[int(hav.argmax())]
    subset, m = assign_subset(truth, ha, hv, margin)
    return subset, m, truth, ties


def human_rated_probs(meta: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Audio-only and visual-only human rating shares from ``meta.extra.ratings`` (None when absent)."""
    ratings = (meta.get("extra") or {}).get("ratings") or {}
    return ratings_to_probs(ratings.get("audio")), ratings_to_probs(ratings.get("visual"))


def truth_subset(row: dict[str, Any]) -> str | None:
    """The exact subset of a clip whose per-modality truth is known (spliced), else None."""
    f, v, y = row.get("face_label"), row.get("voice_label"), row.get("label")
    if not (isinstance(f, str) and isinstance(v, str) and y):
        return None
    if f == y and v == y:
        return "consistent"
    if f == y:
        return "video_aligned"
    if v == y:
        return "audio_aligned"
    return "ambiguous"


def subset_quality(df: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Precision and recall of each subset's assignment on rows with known truth."""
    known = df[df["truth_subset"].notna()]
    out = {}
    for s in SUBSETS[:3]:
        pred, true = known["subset"] == s, known["truth_subset"] == s
        tp = int((pred & true).sum())
        out[s] = {"precision": tp / int(pred.sum()) if pred.sum() else None,
                  "recall": tp / int(true.sum()) if true.sum() else None,
                  "assigned": int(pred.sum()), "true": int(true.sum()), "tp": tp}
    return out
