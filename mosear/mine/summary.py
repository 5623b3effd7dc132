"""The mining summary: counts per subset, unimodal classifier accuracy, audio-vs-visual confusion,
subset precision/recall where the truth is known (spliced clips), stage stats; JSON and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mosear.mine.crossfit import CrossFitResult
from mosear.mine.stage import StageStats
from mosear.mine.subsets import SUBSETS


def merge_stage_stats(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, StageStats] = {}
    for shard in stats:
        for s in shard.get("stages", []):
            st = StageStats.from_dict(s)
            merged.setdefault(st.name, StageStats(st.name, st.version)).merge(st)
    total = sum(s.seconds for s in merged.values()) or 1.0
    return [{**s.to_dict(), "time_share": round(s.seconds / total, 4)} for s in merged.values()]


def write_summary(out: Path, conflicts: pd.DataFrame, audit: pd.DataFrame, stats: list[dict[str, Any]],
                  fits: dict[str, CrossFitResult]) -> dict[str, Any]:
    from mosear.mine.assemble import subset_quality

    labels = sorted(set(conflicts["audio_pred"].dropna()) | set(conflicts["visual_pred"].dropna()))
    conf = pd.crosstab(conflicts["audio_pred"], conflicts["visual_pred"]).reindex(
        index=labels, columns=labels, fill_value=0) if labels else pd.DataFrame()
    summary: dict[str, Any] = {
        "rows": int(len(conflicts)),
        "subsets": {s: int((conflicts["subset"] == s).sum()) for s in SUBSETS},
        "subsets_by_origin": {o: {s: int(((conflicts["origin"] == o) & (conflicts["subset"] == s)).sum())
                                  for s in SUBSETS} for o in sorted(conflicts["origin"].unique())},
        "classifiers": {m: {"cross_fitted_accuracy": f.accuracy, "scored_rows": f.n_scored,
                            "train_rows": f.n_train_rows, "folds": f.n_folds, "grouping": f.grouping,
                            "uninformative_rows": int(f.uninformative.sum()),
                            "notes": sorted(set(f.notes))} for m, f in fits.items()},
        "classifier_accuracy_on_spliced": {},
        "subset_quality_on_known_truth": subset_quality(conflicts),
        "audio_vs_visual_confusion": {"labels": labels, "rows_audio_cols_visual": conf.values.tolist()},
        "dropped": int(len(audit)),
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
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _plot(out / "summary.png", summary, conf)
    return summary


def _plot(path: Path, summary: dict[str, Any], conf: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    subs = summary["subsets"]
    axes[0].bar(list(subs), list(subs.values()), color=["#4c72b0", "#55a868", "#c44e52", "#8c8c8c"])
    axes[0].set_title("clips per subset")
    axes[0].tick_params(axis="x", rotation=20)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
