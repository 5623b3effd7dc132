"""The mining summary: counts per subset and per split × subset × origin, the split grouping used and
its warnings, unimodal classifier accuracy, audio-vs-visual confusion, subset precision/recall where the
truth is known (spliced clips), stage stats; JSON and a PNG plot. Warnings are also logged."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mosear.atomic import atomic_open, atomic_write_json
from mosear.mine.crossfit import CrossFitResult
from mosear.mine.splits import SPLITS, UNASSIGNED, SplitConfig, SplitResult, split_warnings
from mosear.mine.stage import StageStats
from mosear.mine.subsets import SUBSETS, subset_quality

log = logging.getLogger(__name__)


def merge_stage_stats(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, StageStats] = {}
    for shard in stats:
        for s in shard.get("stages", []):
            st = StageStats.from_dict(s)
            merged.setdefault(st.name, StageStats(st.name, st.version)).merge(st)
    total = sum(s.seconds for s in merged.values()) or 1.0
    return [{**s.to_dict(), "time_share": round(s.seconds / total, 4)} for s in merged.values()]


def split_counts(conflicts: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """``{split: {subset: {origin: rows}}}`` over every split (unassigned too), subset and origin, zeros
    included, so an empty cell is visible rather than missing."""
    origins = sorted(conflicts["origin"].unique())
    return {sp: {s: {o: int(((conflicts["split"] == sp) & (conflicts["subset"] == s) & (conflicts["origin"] == o)).sum())
                     for o in origins} for s in SUBSETS} for sp in (*SPLITS, UNASSIGNED)}


def write_summary(out: Path, conflicts: pd.DataFrame, audit: pd.DataFrame, stats: list[dict[str, Any]],
                  fits: dict[str, CrossFitResult], splits: SplitResult, split_cfg: SplitConfig) -> dict[str, Any]:
    labels = sorted(set(conflicts["audio_pred"].dropna()) | set(conflicts["visual_pred"].dropna()))
    conf = pd.crosstab(conflicts["audio_pred"], conflicts["visual_pred"]).reindex(
        index=labels, columns=labels, fill_value=0) if labels else pd.DataFrame()
    summary: dict[str, Any] = {
        "rows": int(len(conflicts)),
        "subsets": {s: int((conflicts["subset"] == s).sum()) for s in SUBSETS},
        "subsets_by_origin": {o: {s: int(((conflicts["origin"] == o) & (conflicts["subset"] == s)).sum())
                                  for s in SUBSETS} for o in sorted(conflicts["origin"].unique())},
        "splits": {**splits.summary(split_cfg),
                   "rows": {sp: int((conflicts["split"] == sp).sum()) for sp in (*SPLITS, UNASSIGNED)},
                   "by_subset_origin": split_counts(conflicts)},
        "warnings": split_warnings(conflicts, splits, split_cfg, SUBSETS),
        "classifiers": {m: {"features": list(f.features), "cross_fitted_accuracy": f.accuracy, "scored_rows": f.n_scored,
                            "train_rows": f.n_train_rows, "folds": f.n_folds, "grouping": f.grouping,
                            "uninformative_rows": int(f.uninformative.sum()),
                            "notes": sorted(set(f.notes))} for m, f in fits.items()},
        "classifier_accuracy_on_spliced": {},
        "subset_quality_on_known_truth": subset_quality(conflicts),
        "audio_vs_visual_confusion": {"labels": labels, "rows_audio_cols_visual": conf.values.tolist()},
        "dropped": int(len(audit)),
        # data errors of the LLM refiner by reason (the row kept the template caption); none without one
        "caption_errors": ({str(k): int(v) for k, v in conflicts["caption_error"].dropna().str.split(":").str[0]
                            .value_counts().items()} if "caption_error" in conflicts else {}),
        "dropped_by_stage_reason": {f"{k[0]}:{k[1]}": int(v) for k, v in
                                    audit.groupby(["stage", "reason"]).size().items()} if len(audit) else {},
        "shards": {"ok": sum(s["status"] == "ok" for s in stats),
                   "failed": [{"shard": s["shard"], "error": s["error"]} for s in stats if s["status"] != "ok"]},
        "samples_in": int(sum(s["samples_in"] for s in stats if s["status"] == "ok")),
        "stage_stats": merge_stage_stats(stats),
    }
    sp = conflicts[conflicts["origin"] == "spliced"]
    for mod, truth in (("audio", "voice_label"), ("visual", "face_label")):
        scored = sp[sp[f"{mod}_pred"].notna()]
        summary["classifier_accuracy_on_spliced"][mod] = (
            float((scored[f"{mod}_pred"] == scored[truth]).mean()) if len(scored) else None)
    for w in summary["warnings"]:
        log.warning("%s", w)
    if summary["caption_errors"]:
        first = conflicts["caption_error"].dropna().iloc[0]
        log.warning("caption LLM: %d of %d rows kept the template caption (%s); first: %s",
                    sum(summary["caption_errors"].values()), len(conflicts),
                    ", ".join(f"{k}: {v}" for k, v in summary["caption_errors"].items()), first[:200])
    atomic_write_json(out / "summary.json", summary, indent=1)
    _plot(out / "summary.png", summary, conf)
    return summary


def _plot(path: Path, summary: dict[str, Any], conf: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    _plot_splits(axes[0], summary)
    cls = summary["classifiers"]
    accs = [cls[m]["cross_fitted_accuracy"] or 0.0 for m in cls]
    axes[1].bar(list(cls), accs, color="#4c72b0")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("cross-fitted unimodal accuracy")
    for i, a in enumerate(accs):
        axes[1].text(i, a + 0.02, f"{a:.2f}", ha="center")
    if conf.size:
        axes[2].imshow(conf.values, cmap="Blues")
        axes[2].set_xticks(range(len(conf.columns)), conf.columns, rotation=45, ha="right")
        axes[2].set_yticks(range(len(conf.index)), conf.index)
        for (i, j), v in np.ndenumerate(conf.values):
            axes[2].text(j, i, str(v), ha="center", va="center", fontsize=8)
    axes[2].set_xlabel("visual prediction")
    axes[2].set_ylabel("audio prediction")
    axes[2].set_title("audio vs visual predictions")
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, dpi=100, format="png")
    plt.close(fig)


def _plot_splits(ax: Any, summary: dict[str, Any]) -> None:
    """Clips per split × subset, stacked by origin (hatched: spliced / human-rated); the title names
    the grouping the splits were made with."""
    counts = summary["splits"]["by_subset_origin"]
    splits = [sp for sp in counts if sum(sum(o.values()) for o in counts[sp].values()) or sp != UNASSIGNED]
    colors = {"consistent": "#4c72b0", "video_aligned": "#55a868", "audio_aligned": "#c44e52", "ambiguous": "#8c8c8c"}
    hatches = {"natural": "", "spliced": "//", "human-rated": ".."}
    width = 0.8 / len(SUBSETS)
    for j, sub in enumerate(SUBSETS):
        bottom = np.zeros(len(splits))
        origins = sorted({o for sp in splits for o in counts[sp][sub]})
        for o in origins:
            vals = np.array([counts[sp][sub].get(o, 0) for sp in splits], float)
            ax.bar(np.arange(len(splits)) + (j - 1.5) * width, vals, width, bottom=bottom, color=colors[sub],
                   hatch=hatches.get(o, "xx"), edgecolor="white", label=sub if o == origins[0] else None)
            bottom += vals
    ax.set_xticks(range(len(splits)), splits)
    ax.legend(fontsize=7, title="subset (hatched: spliced)", title_fontsize=7)
    sp = summary["splits"]
    warn = " (fell back)" if any(f["grouping"] != sp["grouping"] for f in sp["fallbacks"]) else ""
    ax.set_title(f"clips per split × subset, grouped by {sp['grouping']}{warn}", fontsize=10)
