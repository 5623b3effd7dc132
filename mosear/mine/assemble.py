"""From per-shard evidence to the mined outputs (DESIGN.md §3 "Mined output", docs/contracts.md).

Reads only the small evidence tables (features, not media), cross-fits the unimodal classifiers,
assigns subsets, writes captions, and exports ``conflicts.parquet``, the CA-MER-style JSON files,
``train_mix.parquet`` and ``summary.json`` + ``summary.png``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mosear.atomic import atomic_write_json, atomic_write_parquet
from mosear.labels import CANONICAL_LABELS
from mosear.mine.captions import LLMCaptionRefiner, build_reasoning
from mosear.mine.config import MineConfig
from mosear.mine.crossfit import CrossFitResult, choose_groups, crossfit_predict
from mosear.mine.splits import SPLITS, assign_splits
from mosear.mine.subsets import SUBSETS, assign_subset, human_rated_probs

log = logging.getLogger(__name__)

# modality -> (evidence columns concatenated as its features, target column preferred over `label`,
#              fold-group take column, (column, value) meaning "this modality has no evidence")
MODALITIES = {
    "audio": (("audio_feats", "hf_audio_probs"), "voice_label", "voice_take", ("audio_silent", True)),
    "visual": (("visual_feats", "hf_visual_probs"), "face_label", "face_take", ("face_found", False)),
    "text": (("text_feats",), None, "voice_take", None),
}


def read_evidence(out_dir: Path, shards: list[str] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Evidence rows, audit rows and stats of the committed shards (only ``shards`` when given)."""
    ev = Path(out_dir) / "evidence"
    stats = [json.loads(p.read_text()) for p in sorted(ev.glob("*.stats.json"))]
    if shards is not None:
        stats = [s for s in stats if s["shard"] in set(shards)]
    ok = [s["shard"] for s in stats if s["status"] == "ok"]
    frames = [pd.read_parquet(ev / f"{n}.parquet") for n in ok if (ev / f"{n}.parquet").stat().st_size]
    frames = [f for f in frames if len(f)]
    audits = [pd.read_parquet(ev / f"{n}.audit.parquet") for n in ok]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    audit = pd.concat([a for a in audits if len(a)], ignore_index=True) if any(len(a) for a in audits) else \
        pd.DataFrame(columns=["key", "shard", "stage", "reason", "detail"])
    return rows, audit, stats


def _matrix(df: pd.DataFrame, cols: tuple[str, ...]) -> np.ndarray | None:
    parts = []
    for c in cols:
        if c in df.columns:
            parts.append(np.stack([np.asarray(v if v is not None else [np.nan], np.float32) for v in df[c]]))
    if not parts:
        return None
    return np.concatenate(parts, axis=1)


def _pred(p: np.ndarray) -> str | None:
    return None if np.isnan(p).any() else CANONICAL_LABELS[int(p.argmax())]


def crossfit_all(df: pd.DataFrame, cfg: MineConfig) -> dict[str, CrossFitResult]:
    out: dict[str, CrossFitResult] = {}
    for mod, (cols, target_col, take_col, absent) in MODALITIES.items():
        X = _matrix(df, cols)
        if X is not None and absent is not None and absent[0] in df.columns:
            X[(df[absent[0]] == absent[1]).to_numpy()] = np.nan  # no face / no voice: no prediction
        if X is None or np.isnan(X).all():
            continue
        targets = [
            (r[target_col] if target_col and isinstance(r.get(target_col), str) else r["label"]) or None
            for r in df.to_dict("records")
        ]
        takes = df[take_col].astype(str).tolist()
        if cfg.crossfit.group_by == "speaker":
            groups, how = choose_groups(df["speaker"].tolist(), takes, cfg.crossfit.n_folds)
        else:
            groups, how = takes, "source take"
        out[mod] = crossfit_predict(X, targets, groups, cfg.crossfit.n_folds, cfg.crossfit.c,
                                    cfg.crossfit.seed, grouping=how)
    return out


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


def _cue(probs: np.ndarray | None, source: str) -> dict[str, Any] | None:
    """The reading of one modality that the subset was assigned with: top label, its share, source."""
    if probs is None or np.isnan(probs).any() or probs.sum() <= 0:
        return None
    top = int(np.argmax(probs))
    return {"label": CANONICAL_LABELS[top], "score": float(probs[top]), "source": source}


def _refiner(cfg: MineConfig) -> LLMCaptionRefiner | None:
    if not cfg.llm.base_url:
        return None
    key = os.environ.get(cfg.llm.api_key_env) if cfg.llm.api_key_env else None
    return LLMCaptionRefiner(cfg.llm.base_url, cfg.llm.model, key, cfg.llm.timeout_s)


def assemble(cfg: MineConfig, stage_names: list[str], shards: list[str] | None = None) -> dict[str, Any]:
    """Build every mined output from the evidence of ``shards`` (names; default: all committed)."""
    out = Path(cfg.output)
    df, audit, stats = read_evidence(out, shards)
    atomic_write_parquet(out / "dropped.parquet", audit)
    if df.empty:
        raise RuntimeError(f"no sample survived mining ({len(audit)} dropped; see {out / 'dropped.parquet'})")
    fits = crossfit_all(df, cfg)
    records = df.to_dict("records")
    refiner = _refiner(cfg)
    rows = []
    for i, r in enumerate(records):
        probs = {m: (fits[m].probs[i] if m in fits else np.full(len(CANONICAL_LABELS), np.nan, np.float32))
                 for m in MODALITIES}
        meta = json.loads(r["meta_json"])
        ha, hv = human_rated_probs(meta)
        origin = r["origin"]
        if ha is not None and hv is not None:  # per-modality human ratings decide the subset
            subset, margin = assign_subset(r["label"], ha, hv, cfg.margin)
            origin = "human-rated"
            evidence = {"visual": (hv, "visual-only human ratings"), "audio": (ha, "audio-only human ratings")}
        else:
            subset, margin = assign_subset(r["label"], probs["audio"], probs["visual"], cfg.margin)
            evidence = {"visual": (probs["visual"], "cross-fitted face classifier"),
                        "audio": (probs["audio"], "cross-fitted voice classifier")}
        row = {
            "key": r["key"], "shard": r["shard"], "label": r["label"], "dataset": r["dataset"],
            "speaker": r["speaker"],
            "audio_pred": _pred(probs["audio"]), "audio_probs": probs["audio"].tolist(),
            "visual_pred": _pred(probs["visual"]), "visual_probs": probs["visual"].tolist(),
            "text_pred": _pred(probs["text"]), "text_probs": probs["text"].tolist(),
            "subset": subset, "margin": float(margin), "origin": origin,
            "face_label": r["face_label"], "voice_label": r["voice_label"],
            "face_take": r.get("face_take"), "voice_take": r.get("voice_take"), "transcript": meta.get("transcript"),
            "face_found": r.get("face_found"), "audio_silent": r.get("audio_silent"),
            # the cue's fold trained on one class: no prediction (NaN), so never a confident cue
            "audio_uninformative": bool(fits["audio"].uninformative[i]) if "audio" in fits else False,
            "visual_uninformative": bool(fits["visual"].uninformative[i]) if "visual" in fits else False,
            "stages": ",".join(stage_names),
        }
        row["truth_subset"] = truth_subset(row)
        descs = {k: json.loads(r[k]) if isinstance(r.get(k), str) else None
                 for k in ("audio_desc", "visual_desc", "text_desc")}
        cues = {"face_cue": _cue(*evidence["visual"]), "voice_cue": _cue(*evidence["audio"])}
        reasoning, row["misleading_cue"] = build_reasoning({**row, **descs, **cues})
        row["caption_source"], row["caption_error"] = "template", None
        if refiner is not None:  # the refiner sees the reasoning only: the misleading cue stays apart
            reasoning, err = refiner.refine(reasoning, row["label"])
            row["caption_error"] = err
            row["caption_source"] = "template" if err else f"llm:{cfg.llm.model}"
        row["reasoning"] = reasoning
        row["caption"] = f"{reasoning} {row['misleading_cue']}" if row["misleading_cue"] else reasoning
        rows.append(row)
    if refiner is not None:
        refiner.close()
    conflicts = pd.DataFrame(rows)
    split_res = assign_splits(conflicts, cfg.splits)
    conflicts["split"] = split_res.splits
    atomic_write_parquet(out / "conflicts.parquet", conflicts)
    write_exports(out, conflicts)
    mix = train_mix(conflicts, cfg.ambiguous_weight)
    atomic_write_parquet(out / "train_mix.parquet", mix)
    from mosear.mine.summary import write_summary

    return write_summary(out, conflicts, audit, stats, fits, split_res, cfg.splits)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None  # pandas may hold a missing string as NaN


def _export_entry(r: dict[str, Any]) -> dict[str, Any]:
    return {"reason": r["reasoning"], "misleading_cue": _text(r["misleading_cue"]), "label": r["label"],
            "split": r["split"], "audio_pred": r["audio_pred"],
            "visual_pred": r["visual_pred"], "origin": r["origin"], "margin": r["margin"]}


def write_exports(out: Path, conflicts: pd.DataFrame) -> None:
    """The CA-MER-style subset files: ``{split}/{subset}.json`` for each split (the release's layout,
    ``test/video_aligned.json``, ...), and ``{subset}.json`` at the top holding every split's rows, each
    entry naming its ``split`` (unassigned rows appear only there). Files of every split are written,
    empty ones too, so a split folder always has its three files."""
    for s in SUBSETS[:3]:
        part = conflicts[conflicts["subset"] == s]
        atomic_write_json(out / f"{s}.json", {r["key"]: _export_entry(r) for r in part.to_dict("records")},
                          indent=1, ensure_ascii=False)
        for split in SPLITS:
            rows = part[part["split"] == split]
            atomic_write_json(out / split / f"{s}.json", {r["key"]: _export_entry(r) for r in rows.to_dict("records")},
                              indent=1, ensure_ascii=False)


def train_mix(conflicts: pd.DataFrame, ambiguous_weight: float = 0.0) -> pd.DataFrame:
    """Conflict-balanced mix of the train split's rows (all rows when there is no ``split`` column): each
    non-empty subset gets the same total weight (mean weight 1 per row).

    ``weight = N_kept / (n_subsets * n_in_subset)``; ambiguous rows get ``ambiguous_weight`` (0 by
    default: left out). ``target`` is the label followed by the reasoning caption.
    """
    if "split" in conflicts:
        conflicts = conflicts[conflicts["split"] == "train"]
    keep = conflicts[conflicts["subset"] != "ambiguous"]
    counts = keep["subset"].value_counts()
    rows = []
    for r in conflicts.to_dict("records"):
        if r["subset"] == "ambiguous":
            w = ambiguous_weight
        else:
            w = len(keep) / (len(counts) * counts[r["subset"]])
        if w > 0:
            rows.append({"key": r["key"], "shard": r["shard"], "subset": r["subset"], "weight": float(w),
                         "target": f"{r['label']}. {r['caption']}"})
    return pd.DataFrame(rows, columns=["key", "shard", "subset", "weight", "target"])
