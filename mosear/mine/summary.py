"""The mining summary: counts per subset and per split × subset × origin, the split grouping used and
its warnings and the evaluation settings the benchmark cannot serve (``cannot_run``), the people of each
split, human-rated items and their ties, unimodal classifier accuracy (also on the splices' own cue
labels), audio-vs-visual confusion, stage stats; JSON and a PNG plot. Warnings are also logged."""

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
from mosear.mine.subsets import SPLICED, SUBSETS, subset_quality

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
                     for o in origins} for s in (*SUBSETS, SPLICED)} for sp in (*SPLITS, UNASSIGNED)}


def cannot_run(conflicts: pd.DataFrame) -> list[dict[str, str]]:
    """Evaluation needs this benchmark cannot meet, found when mining ends (the pipeline skips them with
    the reason): AR calibration (``ar_calibrated``) needs validation items with a truth in
    video_aligned, audio_aligned and consistent (its rule compares the conflict mean with consistent
    accuracy); every accuracy subset of the test split needs an item
    (``subset:{name}``); preference needs spliced conflicts in test (``preference``)."""
    out: list[dict[str, str]] = []

    def n(split: str, subset: str) -> int:
        return int(((conflicts["split"] == split) & (conflicts["subset"] == subset)).sum())

    val = {k: n("validation", k) for k in ("video_aligned", "audio_aligned", "consistent")}
    if not all(val.values()):  # evaluate/benchmark_files.py load_calibration_split: the rule needs all three
        out.append({"setting": "ar_calibrated", "split": "validation",
                    "reason": f"AR calibration needs validation items in video_aligned, audio_aligned and "
                              f"consistent (conflict-mean within one SE of consistent accuracy); the "
                              f"validation split holds {val}"})
    for k in SUBSETS[:3]:
        if not n("test", k):
            out.append({"setting": f"subset:{k}", "split": "test",
                        "reason": f"the test split holds no {k} item ({int((conflicts['subset'] == k).sum())} in "
                                  f"the corpus): its accuracy cannot be reported"})
    sp = conflicts[(conflicts["split"] == "test") & (conflicts["subset"] == SPLICED)]
    if (conflicts["subset"] == SPLICED).any() and not (sp["face_label"] != sp["voice_label"]).any():
        out.append({"setting": "preference", "split": "test",
                    "reason": "the test split holds no spliced conflict: face/voice preference cannot be reported"})
    return out


def human_rated_counts(conflicts: pd.DataFrame) -> dict[str, Any]:
    """Human-rated items, their ties (rule: a tied cue is unsure; a tied audio-visual vote leaves the
    acted label and the row ambiguous) and clips of a rated dataset that the ratings do not name."""
    hr = conflicts[conflicts["origin"] == "human-rated"]
    ties = hr["rating_ties"].dropna() if "rating_ties" in hr else pd.Series(dtype=str)
    by_mod = {m: int(ties.str.split(",").apply(lambda x, m=m: m in x).sum()) for m in ("audio", "visual", "audio_visual")}
    unrated = int(conflicts["unrated"].sum()) if "unrated" in conflicts else 0
    return {"items": int(len(hr)), "subsets": {s: int((hr["subset"] == s).sum()) for s in SUBSETS},
            "rows_with_a_tie": int(len(ties)), "ties_by_modality": by_mod,
            "tie_rule": "a tied face-only or voice-only vote is an unsure cue; a tied audio-visual vote leaves no "
                        "truth (acted label kept, row ambiguous)",
            "truth": "the audio-visual vote (acted label in acted_label)", "unrated_clips": unrated,
            "ratings_rows_unknown_names": int(conflicts["ratings_unknown_names"].max())
            if "ratings_unknown_names" in conflicts and len(conflicts) else 0}


def write_summary(out: Path, conflicts: pd.DataFrame, audit: pd.DataFrame, stats: list[dict[str, Any]],
                  fits: dict[str, CrossFitResult], splits: SplitResult, split_cfg: SplitConfig,
                  splice_target: str = "none") -> dict[str, Any]:
    labels = sorted(set(conflicts["audio_pred"].dropna()) | set(conflicts["visual_pred"].dropna()))
    conf = pd.crosstab(conflicts["audio_pred"], conflicts["visual_pred"]).reindex(
        index=labels, columns=labels, fill_value=0) if labels else pd.DataFrame()
    summary: dict[str, Any] = {
        "rows": int(len(conflicts)),
        "subsets": {s: int((conflicts["subset"] == s).sum()) for s in (*SUBSETS, SPLICED)},
        "subsets_by_origin": {o: {s: int(((conflicts["origin"] == o) & (conflicts["subset"] == s)).sum())
                                  for s in (*SUBSETS, SPLICED)} for o in sorted(conflicts["origin"].unique())},
        "train_mix": {"splice_target": splice_target,
                      "splices": "left out (no true emotion)" if splice_target == "none" else
                      f"counterfactual augmentation: target = the {splice_target}'s emotion"},
        "human_rated": human_rated_counts(conflicts),
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
    summary["cannot_run"] = cannot_run(conflicts)
    hr = summary["human_rated"]
    if hr["rows_with_a_tie"]:
        summary["warnings"].append(f"human-rated: {hr['rows_with_a_tie']} of {hr['items']} rated clips have a tied "
                                   f"vote {hr['ties_by_modality']} ({hr['tie_rule']})")
    if hr["unrated_clips"]:
        summary["warnings"].append(f"human-rated: {hr['unrated_clips']} clip(s) of a rated dataset have no row in "
                                   "its ratings file (mined from the classifiers instead)")
    if hr["ratings_rows_unknown_names"]:
        summary["warnings"].append(f"human-rated: {hr['ratings_rows_unknown_names']} row(s) of the ratings file name "
                                   "no CREMA-D clip and were left out")
    summary["warnings"] += [f"cannot run {c['setting']} ({c['split']}): {c['reason']}" for c in summary["cannot_run"]]
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
    colors = {"consistent": "#4c72b0", "video_aligned": "#55a868", "audio_aligned": "#c44e52", "ambiguous": "#8c8c8c",
              SPLICED: "#dd8452"}
    hatches = {"natural": "", "spliced": "//", "human-rated": ".."}
    width = 0.8 / (len(SUBSETS) + 1)
    for j, sub in enumerate((*SUBSETS, SPLICED)):
        bottom = np.zeros(len(splits))
        origins = sorted({o for sp in splits for o in counts[sp][sub]})
        for o in origins:
            vals = np.array([counts[sp][sub].get(o, 0) for sp in splits], float)
            ax.bar(np.arange(len(splits)) + (j - 2) * width, vals, width, bottom=bottom, color=colors[sub],
                   hatch=hatches.get(o, "xx"), edgecolor="white", label=sub if o == origins[0] else None)
            bottom += vals
    ax.set_xticks(range(len(splits)), splits)
    ax.legend(fontsize=7, title="subset (hatched: spliced)", title_fontsize=7)
    sp = summary["splits"]
    warn = " (fell back)" if any(f["grouping"] != sp["grouping"] for f in sp["fallbacks"]) else ""
    ax.set_title(f"clips per split × subset, grouped by {sp['grouping']}{warn}", fontsize=10)
