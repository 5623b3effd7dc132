"""Calibration of AR's threshold and fraction on a validation split.

Rule (from the issue): among the grid of ``(threshold, fraction)`` settings, keep those whose
``consistent`` accuracy is not lower than the accuracy without AR (``fraction = 0``) minus
``tolerance`` (default 0: "without lowering consistent accuracy"); pick the one with the smallest
``|acc(audio_aligned) - acc(video_aligned)|``; ties go to the smaller fraction, then the larger threshold
(the gentlest change). ``fraction = 0`` is always a candidate, so calibration never makes things worse
on the validation split by this rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from mosear.labels import CANONICAL_LABELS
from mosear.model.attention import set_attention_mode

SUBSETS = ("consistent", "video_aligned", "audio_aligned")


@dataclass
class CalibrationResult:
    threshold: float
    fraction: float
    table: list[dict[str, float]] = field(default_factory=list)  # one row per setting: accuracies, gap


def subset_accuracy(model: Any, batches: Iterable[tuple[dict[str, torch.Tensor], list[str], list[str]]],
                    labels: tuple[str, ...] = CANONICAL_LABELS) -> dict[str, float]:
    """Accuracy per subset of ``argmax score_labels`` over ``(batch, gold labels, subsets)`` triples."""
    hits: dict[str, list[int]] = {}
    for batch, gold, subsets in batches:
        pred = model.score_labels(batch, labels).argmax(-1).tolist()
        for p, g, s in zip(pred, gold, subsets):
            hits.setdefault(s, []).append(int(labels[p] == g))
    return {s: sum(h) / len(h) for s, h in hits.items()}


def calibrate_ar(model: Any, batches: list[tuple[dict[str, torch.Tensor], list[str], list[str]]],
                 labels: tuple[str, ...] = CANONICAL_LABELS, thresholds: Iterable[float] = (0.3, 0.5, 0.7),
                 fractions: Iterable[float] = (0.25, 0.5, 0.75), layers: list[int] | None = None,
                 heads: list[int] | None = None, tolerance: float = 0.0) -> CalibrationResult:
    """Grid-search AR settings on ``batches`` (collated prompts, gold labels, subset names); see module doc.

    Leaves the model in AR mode with the chosen setting and returns it with the whole table.
    """
    rows = []
    for tau, f in [(1.0, 0.0)] + [(t, f) for t in thresholds for f in fractions if f > 0]:
        set_attention_mode(model, "ar", threshold=tau, fraction=f, layers=layers, heads=heads)
        acc = subset_accuracy(model, batches, labels)
        missing = [s for s in SUBSETS if s not in acc]
        if missing:
            raise ValueError(f"the validation split has no {missing} samples")
        rows.append({"threshold": tau, "fraction": f, **acc, "gap": acc["audio_aligned"] - acc["video_aligned"]})
    floor = rows[0]["consistent"] - tolerance
    ok = [r for r in rows if r["consistent"] >= floor]
    best = min(ok, key=lambda r: (abs(r["gap"]), r["fraction"], -r["threshold"]))
    set_attention_mode(model, "ar", threshold=best["threshold"], fraction=best["fraction"], layers=layers, heads=heads)
    return CalibrationResult(best["threshold"], best["fraction"], rows)
