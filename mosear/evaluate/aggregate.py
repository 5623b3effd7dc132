"""From unit prediction tables to one long metrics table (``metrics.parquet``).

``metrics.parquet`` has one row per number: ``checkpoint, benchmark, setting, ar, ar_fraction, drop,
subset, metric, value, ci_low, ci_high, unit_id``. ``ci_low`` / ``ci_high`` bound the 95 % group-bootstrap
interval (2000 resamples of the unit's items, clips sharing a face or voice source resampled together;
:mod:`.resampled`) of every score; counts (``items, n, unparsed, errors, ov_items, flip_n``) have none
(NaN). ``subset`` is ``all`` (every item with a truth), a CA-MER subset, ``ambiguous`` (a mined split's
items with a truth outside the three) or ``spliced``. Metrics:
``items`` (rows, every benchmark item), ``n, unparsed, errors, accuracy, war, uar, weighted_f1``
(closed set over labelled rows, see :mod:`.metrics`),
``ov_precision, ov_recall, ov_mean, ov_items`` (open-vocabulary set metric over items with a
reference; MERTools' Accuracy_s = mean |G∩P|/|P|, Recall_s = mean |G∩P|/|G|, an empty P scoring 0),
``judge_errors`` (items whose judge reply could not be read: left out of the set metric, not scored 0),
``clue_overlap, label_overlap`` (EMER, 1–10), ``share_audio, share_visual, share_text``
(attention shares), ``calibrated_threshold`` / ``calibrated_fraction`` (settings with ``calibrate``: the
AR values chosen on the validation split), on subset ``spliced`` ``pref_n, face_rate, voice_rate,
neither_rate, preference_index`` (:func:`mosear.evaluate.metrics.preference`), ``conflict_gap``, ``conflict_mean`` (mean of video-aligned and audio-aligned
accuracy) and ``flip_rate`` / ``flip_n`` (subset ``all`` only).

Which unit files count: those named in ``units.json`` (written by ``mosear eval``) when it exists,
otherwise every file in ``units/`` (the newest per checkpoint × benchmark × setting).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from mosear.evaluate import metrics as M
from mosear.evaluate.resampled import unit_intervals

__all__ = ["current_unit_files", "unit_meta", "load_unit", "compute_metrics", "METRIC_COLUMNS"]

METRIC_COLUMNS = ["checkpoint", "benchmark", "setting", "ar", "ar_fraction", "drop", "subset", "metric", "value",
                  "ci_low", "ci_high", "unit_id"]


def unit_meta(path: Path) -> dict:
    """The unit description stored in a prediction file's schema metadata."""
    md = pq.read_schema(path).metadata or {}
    raw = md.get(b"mosear.unit")
    if raw is None:
        raise ValueError(f"{path}: not a mosear prediction file (no mosear.unit metadata)")
    return json.loads(raw)


def current_unit_files(results_dir: str | Path) -> list[Path]:
    root = Path(results_dir)
    manifest = root / "units.json"
    if manifest.is_file():
        names = json.loads(manifest.read_text())["units"]
        files = [root / "units" / n for n in names]
        return [f for f in files if f.is_file()]
    newest: dict[tuple, Path] = {}
    for f in sorted((root / "units").glob("*.parquet")):
        m = unit_meta(f)
        k = (m["checkpoint"], m["benchmark"], m["setting"]["name"])
        if k not in newest or f.stat().st_mtime > newest[k].stat().st_mtime:
            newest[k] = f
    return sorted(newest.values())


def load_unit(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def _mean(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.mean()) if len(s) else math.nan


def _unit_rows(df: pd.DataFrame, meta: dict) -> list[dict]:
    setting = meta["setting"]
    base = {"checkpoint": meta["checkpoint"], "benchmark": meta["benchmark"], "setting": setting["name"],
            "ar": bool(setting.get("ar")), "ar_fraction": setting.get("ar_fraction"), "drop": setting.get("drop"),
            "unit_id": meta["unit_id"]}
    rows = []
    bounds = unit_intervals(df)

    def add(subset: str, metric: str, value: float) -> None:
        lo, hi = bounds.get((subset, metric), (math.nan, math.nan))
        rows.append({**base, "subset": subset, "metric": metric, "value": float(value), "ci_low": lo, "ci_high": hi})

    per = M.subset_scores(df)
    for subset, scores in per.items():
        add(subset, "items", float(len(df) if subset == "all" else (df["subset"] == subset).sum()))
        for k, v in scores.items():
            if scores["n"] or k in ("n", "errors"):  # no closed-set scores for reasoning-only items
                add(subset, k, v)
    ok = df[df["error"].isna()]
    groups = [("all", ok)] + ([(str(s), g) for s, g in ok.groupby("subset", dropna=True)] if ok["subset"].notna().any() else [])
    for subset, g in groups:
        n_judge_errors = int(g["judge_error"].notna().sum()) if "judge_error" in g else 0
        if n_judge_errors or g["ov_precision"].notna().any():
            add(subset, "judge_errors", float(n_judge_errors))  # unreadable judge replies: not scored
        if g["ov_precision"].notna().any():
            p, r = _mean(g["ov_precision"]), _mean(g["ov_recall"])
            add(subset, "ov_precision", p)
            add(subset, "ov_recall", r)
            add(subset, "ov_mean", (p + r) / 2)
            add(subset, "ov_items", float(g["ov_precision"].notna().sum()))
        for k in ("clue_overlap", "label_overlap"):
            if g[k].notna().any():
                add(subset, k, _mean(g[k]))
        for mod, v in M.attention_shares(g).items():
            add(subset, f"share_{mod}", v)
    pref = M.preference(df)
    if pref["n"]:  # spliced clips: which cue the answer followed (no truth, no accuracy)
        add("spliced", "pref_n", float(pref["n"]))
        for k in M.PREFERENCE_METRICS:
            add("spliced", k, pref[k])
    cal = meta.get("calibration")
    if cal:  # the AR setting chosen on the validation split, recorded with the unit
        add("all", "calibrated_threshold", cal["threshold"])
        add("all", "calibrated_fraction", cal["fraction"])
    gap = M.conflict_gap(per)
    if not math.isnan(gap):
        add("all", "conflict_gap", gap)
        add("all", "conflict_mean", M.conflict_mean(per))
    return rows


def compute_metrics(results_dir: str | Path) -> pd.DataFrame:
    """Long metrics table over the current units (also written to ``metrics.parquet``)."""
    root = Path(results_dir)
    files = current_unit_files(root)
    groups: dict[tuple[str, str], list[tuple[dict, Path]]] = defaultdict(list)
    for f in files:
        m = unit_meta(f)
        groups[(m["checkpoint"], m["benchmark"])].append((m, f))
    rows: list[dict] = []
    for (_ck, _bench), members in sorted(groups.items()):
        tables = {m["setting"]["name"]: (m, load_unit(f)) for m, f in members}  # one checkpoint × benchmark at a time
        for m, df in tables.values():
            rows += _unit_rows(df, m)
        # flip rate: each ablated setting against the same checkpoint/benchmark with nothing removed, AR off
        ref = next((tables[n] for n in ("ar_off",) if n in tables), None) or next(
            (t for t in tables.values() if not t[0]["setting"].get("ar") and not t[0]["setting"].get("drop")), None)
        if ref is None:
            continue
        for m, df in tables.values():
            if m["setting"].get("drop"):
                fr = M.flip_rate(ref[1], df)
                base = {"checkpoint": m["checkpoint"], "benchmark": m["benchmark"], "setting": m["setting"]["name"],
                        "ar": bool(m["setting"].get("ar")), "ar_fraction": m["setting"].get("ar_fraction"),
                        "drop": m["setting"].get("drop"), "unit_id": m["unit_id"], "subset": "all"}
                lo, hi = fr["ci"]
                rows.append({**base, "metric": "flip_rate", "value": fr["flip_rate"], "ci_low": lo, "ci_high": hi})
                rows.append({**base, "metric": "flip_n", "value": float(fr["n"]), "ci_low": math.nan, "ci_high": math.nan})
    out = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    from mosear.atomic import atomic_write_parquet

    atomic_write_parquet(root / "metrics.parquet", out)
    return out
