"""Calibration of AR's threshold and fraction on a validation split (never on test).

Rule (:func:`choose_setting`): over the grid of ``(threshold, fraction)`` settings, keep those whose
``consistent`` accuracy is not below the accuracy without AR (``fraction = 0``) by more than that
accuracy's bootstrap standard error (over the validation consistent items, :mod:`mosear.evaluate.intervals`);
among them pick the highest *conflict-mean* accuracy ``(acc(video_aligned) + acc(audio_aligned)) / 2``;
ties go to the smaller fraction, then the larger threshold (the gentlest change). ``fraction = 0`` is
always a candidate. The objective is the conflict-mean and not ``|gap|``: a smaller gap can also be
bought by lowering audio-aligned accuracy, a higher conflict-mean cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from mosear.labels import CANONICAL_LABELS
from mosear.model.ar import set_attention_mode

SUBSETS = ("consistent", "video_aligned", "audio_aligned")


@dataclass
class CalibrationResult:
    threshold: float
    fraction: float
    table: list[dict[str, float]] = field(default_factory=list)  # one row per setting: accuracies, gap
    options: dict[str, str] = field(default_factory=lambda: {"share": "mass", "direction": "audio"})  # AR variant


def subset_hits(model: Any, batches: Iterable[tuple[dict[str, torch.Tensor], list[str], list[str]]],
                labels: tuple[str, ...] = CANONICAL_LABELS) -> dict[str, list[int]]:
    """Per subset, one 0/1 hit per item of ``argmax score_labels`` over ``(batch, gold, subsets)`` triples."""
    hits: dict[str, list[int]] = {}
    for batch, gold, subsets in batches:
        pred = model.score_labels(batch, labels).argmax(-1).tolist()
        for p, g, s in zip(pred, gold, subsets):
            hits.setdefault(s, []).append(int(labels[p] == g))
    return hits


def subset_accuracy(model: Any, batches: Iterable[tuple[dict[str, torch.Tensor], list[str], list[str]]],
                    labels: tuple[str, ...] = CANONICAL_LABELS) -> dict[str, float]:
    """Accuracy per subset of ``argmax score_labels`` over ``(batch, gold labels, subsets)`` triples."""
    return {s: sum(h) / len(h) for s, h in subset_hits(model, batches, labels).items()}


def accuracy_se(hits: list[int]) -> float:
    """Bootstrap standard error of the mean of 0/1 ``hits`` (items resampled)."""
    import pandas as pd

    from mosear.evaluate.intervals import bootstrap_se

    df = pd.DataFrame({"hit": hits})
    return bootstrap_se(df, lambda d: float(d["hit"].mean()) if len(d) else float("nan"))


def choose_setting(rows: list[dict[str, float]], consistent_se: float) -> dict[str, float]:
    """The calibration rule of the module docstring over ``rows`` (``rows[0]`` is the no-AR setting).

    Each row holds ``threshold, fraction, consistent, video_aligned, audio_aligned``.
    """
    base = rows[0]
    if base["fraction"] != 0:
        raise ValueError("rows[0] must be the setting without AR (fraction 0)")
    se = 0.0 if consistent_se is None or consistent_se != consistent_se else consistent_se
    floor = base["consistent"] - se
    ok = [r for r in rows if r["consistent"] >= floor - 1e-12]
    cm = lambda r: (r["video_aligned"] + r["audio_aligned"]) / 2  # noqa: E731
    return max(ok, key=lambda r: (round(cm(r), 12), -r["fraction"], r["threshold"]))


def calibrate_ar(model: Any, batches: list[tuple[dict[str, torch.Tensor], list[str], list[str]]],
                 labels: tuple[str, ...] = CANONICAL_LABELS, thresholds: Iterable[float] = (0.3, 0.5, 0.7),
                 fractions: Iterable[float] = (0.25, 0.5, 0.75), layers: list[int] | None = None,
                 heads: list[int] | None = None,
                 options: Iterable[dict[str, str]] = ({"share": "mass", "direction": "audio"},)) -> CalibrationResult:
    """Grid-search AR settings on validation ``batches`` (collated prompts, gold labels, subset names).

    ``options``: AR variants (``share``, ``direction`` of :func:`~mosear.model.ar.set_attention_mode`)
    searched too, each over the thresholds x fractions (``direction="both"`` only with thresholds >= 0.5).
    Leaves the model in AR mode with the setting :func:`choose_setting` picks and returns it with the table
    (the chosen variant in ``CalibrationResult.options``).
    """
    rows = []
    consistent_se = float("nan")
    grid = [(1.0, 0.0, {"share": "mass", "direction": "audio"})]
    for opt in options:
        opt = {"share": "mass", "direction": "audio", **opt}
        grid += [(t, f, opt) for t in thresholds for f in fractions
                 if f > 0 and (opt["direction"] != "both" or t >= 0.5)]
    for tau, f, opt in grid:
        set_attention_mode(model, "ar", threshold=tau, fraction=f, layers=layers, heads=heads, **opt)
        hits = subset_hits(model, batches, labels)
        missing = [s for s in SUBSETS if s not in hits]
        if missing:
            raise ValueError(f"the validation split has no {missing} samples")
        acc = {s: sum(h) / len(h) for s, h in hits.items()}
        if f == 0:
            consistent_se = accuracy_se(hits["consistent"])
        rows.append({"threshold": tau, "fraction": f, **opt, **acc, "gap": acc["audio_aligned"] - acc["video_aligned"],
                     "conflict_mean": (acc["audio_aligned"] + acc["video_aligned"]) / 2})
    best = choose_setting(rows, consistent_se)
    opt = {"share": best["share"], "direction": best["direction"]}
    set_attention_mode(model, "ar", threshold=best["threshold"], fraction=best["fraction"], layers=layers, heads=heads,
                       **opt)
    return CalibrationResult(best["threshold"], best["fraction"], rows, opt)
