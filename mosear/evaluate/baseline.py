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
                 "all": {...}},
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


def _acc(df: pd.DataFrame, subset: str | None) -> float:
    part = df if subset is None else df[df["subset"] == subset]
    return float(part["ok"].mean()) if len(part) else float("nan")


def baseline_accuracy(items: list[Any], label: str) -> dict[str, Any]:
    """Accuracy of always answering ``label`` on ``items`` (``.label``, ``.subset``, ``.group``, ``.key``):
    per subset, over all, and the conflict gap / conflict-mean, each with its 95 % group-bootstrap interval."""
    from mosear.evaluate.intervals import bootstrap

    rows = [{"ok": it.label == label, "subset": it.subset or "", "group": it.group or it.key}
            for it in items if it.label is not None]
    df = pd.DataFrame(rows, columns=["ok", "subset", "group"])
    out: dict[str, Any] = {"subsets": {}}
    for subset in ("consistent", *CONFLICTS, None):
        part = df if subset is None else df[df["subset"] == subset]
        iv = bootstrap(part, lambda d: _acc(d, None), groups="group")
        out["subsets"][subset or "all"] = {"value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "n": iv.n}
    for name, stat in (("conflict_gap", lambda d: _acc(d, "audio_aligned") - _acc(d, "video_aligned")),
                       ("conflict_mean", lambda d: (_acc(d, "audio_aligned") + _acc(d, "video_aligned")) / 2)):
        iv = bootstrap(df, stat, groups="group")
        out[name] = {"value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "n": iv.n}
    # spliced clips (no truth, two different cues): how often the constant answer names each cue
    cues = [(getattr(it, "face_label", None), getattr(it, "voice_label", None), it) for it in items if it.label is None]
    spl = pd.DataFrame([{"face": f == label, "voice": v == label, "group": it.group or it.key}
                        for f, v, it in cues if f and v and f != v], columns=["face", "voice", "group"])
    if len(spl):
        out["preference"] = {}
        for name, stat in (("face_rate", lambda d: float(d["face"].mean())),
                           ("voice_rate", lambda d: float(d["voice"].mean())),
                           ("neither_rate", lambda d: float(1 - d["face"].mean() - d["voice"].mean())),
                           ("preference_index", lambda d: float(d["voice"].mean() - d["face"].mean()))):
            iv = bootstrap(spl, stat, groups="group")
            out["preference"][name] = {"value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "n": iv.n}
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
