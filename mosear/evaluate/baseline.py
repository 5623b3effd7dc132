"""The training-majority baseline: what a model scores that answers the most frequent training label
for every clip, without reading the face, the voice or the words.

On a small or skewed benchmark a model can sit well above chance (``1 / #labels``) by learning the
label prior alone: the sample corpus's train split is half ``sad``. So the method table carries this
row beside the methods, and the headline sentence says a method *beats the training-majority answer*
only when its interval clears the baseline's (the same non-overlap rule as between methods).

:func:`majority_baselines` runs with the protocol check, before any unit, from what is already on disk:
the checkpoint's training keys (``train_keys.json``) and, for a mined benchmark, the labels of those keys
in its ``conflicts.parquet``. Benchmarks whose training labels cannot be known (a CA-MER release, a
checkpoint without keys) get no row; the record says why. Per benchmark::

    {"label": "sad", "checkpoint": "lora", "train_labelled": 54, "counts": {"sad": 27, ...},
     "subsets": {"consistent": {"value", "ci_low", "ci_high", "n"}, "video_aligned": ..., "audio_aligned": ...,
                 "all": {...}},  # "all": every item with a truth (a mined split's ambiguous ones too)
     "weighted_f1": {...},  # over the items of "all"
     "conflict_gap": {...}, "conflict_mean": {...},
     "preference": {"face_rate", "voice_rate", "neither_rate", "preference_index": {...}}}  # when there are splices

Intervals: the group bootstrap of :mod:`mosear.evaluate.intervals` over the evaluated items (groups =
items sharing a face or voice source), as for the methods.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["majority_baselines", "baseline_accuracy"]

CONFLICTS = ("video_aligned", "audio_aligned")


def baseline_accuracy(items: list[Any], label: str) -> dict[str, Any]:
    """Scores of always answering ``label`` on ``items`` (``.key``, ``.label``, ``.subset``, ``.group``; splices
    with ``.face_label`` / ``.voice_label`` and no label): accuracy per subset and over all (every item with a
    truth; weighted F1 over the same items), the conflict gap
    and conflict-mean, and on splices the preference rates, each with its 95 % interval. The answers go
    through the methods' own code (:mod:`.metrics`, :func:`~mosear.evaluate.resampled.unit_intervals`: the
    same resampling units and draws), so the row compares like with like."""
    from mosear.evaluate import metrics as M
    from mosear.evaluate.resampled import unit_intervals

    df = pd.DataFrame([{"key": it.key, "subset": it.subset, "label": it.label, "pred_label": label,
                        "group": it.group, "face_label": getattr(it, "face_label", None),
                        "voice_label": getattr(it, "voice_label", None), "error": None} for it in items],
                      columns=["key", "subset", "label", "pred_label", "group", "face_label", "voice_label", "error"])
    if df["group"].isna().all():
        df = df.drop(columns=["group"])
    per = M.subset_scores(df) if len(df) else {}
    bounds = unit_intervals(df) if len(df) else {}
    nan = float("nan")

    def rec(subset: str, metric: str, value: float, n: int) -> dict[str, float]:
        lo, hi = bounds.get((subset, metric), (nan, nan))
        return {"value": float(value), "ci_low": lo, "ci_high": hi, "n": int(n)}

    out: dict[str, Any] = {"subsets": {}}
    for subset in ("consistent", *CONFLICTS, "all"):
        sc = per.get(subset, {})
        n = int(sc.get("n", 0))
        out["subsets"][subset] = rec(subset, "accuracy", sc.get("accuracy", nan) if n else nan, n)
    n_all = out["subsets"]["all"]["n"]  # every item with a truth: the "all with a truth" column's items
    out["weighted_f1"] = rec("all", "weighted_f1", per.get("all", {}).get("weighted_f1", nan) if n_all else nan, n_all)
    n_conf = out["subsets"]["video_aligned"]["n"] + out["subsets"]["audio_aligned"]["n"]
    out["conflict_gap"] = rec("all", "conflict_gap", M.conflict_gap(per), n_conf)
    out["conflict_mean"] = rec("all", "conflict_mean", M.conflict_mean(per), n_conf)
    pref = M.preference(df) if len(df) else {"n": 0}
    if pref["n"]:  # splices (no truth, two different cues): how often the constant answer names each cue
        out["preference"] = {k: rec("spliced", k, pref[k], pref["n"]) for k in M.PREFERENCE_METRICS}
    return out


def _train_labels(bench: Any, keys: frozenset[str]) -> Counter | None:
    """Labels of the training keys found in a mined benchmark's ``conflicts.parquet`` (None: not mined)."""
    import pyarrow.parquet as pq

    path = Path(bench.spec.path) / "conflicts.parquet" if getattr(bench.spec, "path", None) else None
    if path is None or not path.is_file():
        return None
    t = pq.read_table(path, columns=["key", "label"]).to_pydict()
    return Counter(lab for k, lab in zip(t["key"], t["label"]) if k in keys and lab is not None)


def majority_baselines(protocol: dict[str, Any], benches: dict[str, Any]) -> dict[str, Any]:
    """``{benchmark: record}`` (module docstring) from the protocol record's checkpoints (those with
    training keys; the first one that has labels in the benchmark is used: the methods of one run share
    a train split) and the loaded benchmarks. A benchmark without a row gets ``{"skipped": reason}``."""
    from mosear.train.keys import read_train_keys

    out: dict[str, Any] = {}
    for bname, bench in benches.items():
        rec: dict[str, Any] = {"skipped": "no checkpoint records training keys whose labels this benchmark holds "
                                          "(a mined benchmark's conflicts.parquet names them)"}
        for cname, entry in (protocol.get("checkpoints") or {}).items():
            if not entry.get("train_keys") or str(entry.get("train_keys", "")).startswith(("none", "unknown")):
                continue
            tk = read_train_keys(entry["path"])
            counts = _train_labels(bench, tk.keys) if tk is not None else None
            if not counts:
                continue
            label = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]  # ties: alphabetical
            rec = {"label": label, "checkpoint": cname, "train_labelled": int(sum(counts.values())),
                   "counts": dict(counts.most_common()), **baseline_accuracy(bench.items, label)}
            break
        out[bname] = rec
    return out
