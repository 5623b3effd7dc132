"""From per-shard evidence to the mined outputs (DESIGN.md §3 "Mined output", docs/contracts.md).

Reads only the small evidence tables (features, not media), cross-fits the unimodal classifiers,
assigns subsets, writes captions, and exports ``conflicts.parquet``, the CA-MER-style JSON files,
``train_mix.parquet`` and ``summary.json`` + ``summary.png``.

Each modality's classifier takes as input the features the pipeline's stages declare for it
(``MiningStage.features``, :meth:`~mosear.mine.stage_pipeline.StagePipeline.feature_columns`), concatenated
in pipeline order; ``summary.json`` names them (``classifiers.{modality}.features``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mosear.atomic import atomic_write_json, atomic_write_parquet
from mosear.labels import CANONICAL_LABELS
from mosear.mine.captions import LLMCaptionRefiner, build_reasoning
from mosear.mine.config import MineConfig
from mosear.mine.crossfit import CrossFitResult, choose_groups, crossfit_predict
from mosear.mine.stage_pipeline import StagePipeline
from mosear.mine.splits import SPLITS, assign_splits
from mosear.mine.subsets import SPLICED, SUBSETS, assign_subset, human_rated_probs, human_rated_subset, truth_subset
from mosear.mine.summary import write_summary

log = logging.getLogger(__name__)

# What a modality is, beside its features (which come from the stages' declarations):
# modality -> (target column preferred over `label`, fold-group take column,
#              (column, value) meaning "this modality has no evidence")
MODALITY_TRUTH: dict[str, tuple[str | None, str, tuple[str, Any] | None]] = {
    "audio": ("voice_label", "voice_take", ("audio_silent", True)),
    "visual": ("face_label", "face_take", ("face_found", False)),
    "text": (None, "voice_take", None),
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


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and bool(np.isnan(v)))


def _column(df: pd.DataFrame, col: str) -> np.ndarray:
    """One feature column as float32[N, D]: a number per row is D = 1; a missing value (None, or NaN
    where a shard lacks the column) is a row of NaN. Vectors of different lengths are a stage bug."""
    vals = [None if _missing(v) else np.asarray(v, np.float32).reshape(-1) for v in df[col]]
    widths = {v.size for v in vals if v is not None}
    if len(widths) > 1:
        raise ValueError(f"feature {col!r} has vectors of lengths {sorted(widths)}: a feature's length is "
                         "fixed (a stage bug; fix the stage and bump its version)")
    width = widths.pop() if widths else 1
    return np.stack([np.full(width, np.nan, np.float32) if v is None else v for v in vals])


def _matrix(df: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray | None, list[str]]:
    """The columns of ``cols`` that ``df`` has, concatenated: float32[N, sum of D], and their names."""
    have = [c for c in cols if c in df.columns]
    if not have:
        return None, []
    return np.concatenate([_column(df, c) for c in have], axis=1), have


def _pred(p: np.ndarray) -> str | None:
    return None if np.isnan(p).any() else CANONICAL_LABELS[int(p.argmax())]


def crossfit_all(df: pd.DataFrame, cfg: MineConfig, features: dict[str, list[str]]) -> dict[str, CrossFitResult]:
    """One cross-fitted classifier per modality that has evidence; ``features``: ``{modality: [column,
    ...]}`` (:meth:`StagePipeline.feature_columns`). Each result's ``features`` names its input columns."""
    out: dict[str, CrossFitResult] = {}
    for mod, (target_col, take_col, absent) in MODALITY_TRUTH.items():
        X, cols = _matrix(df, features.get(mod, []))
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
        out[mod].features = cols
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
    from mosear.secrets import api_key

    key = api_key(cfg.llm.api_key_env, cfg.llm.base_url, "llm.api_key_env")
    return LLMCaptionRefiner(cfg.llm.base_url, cfg.llm.model, key, cfg.llm.timeout_s)


def assemble(cfg: MineConfig, pipeline: StagePipeline | None = None, shards: list[str] | None = None
             ) -> dict[str, Any]:
    """Build every mined output from the evidence of ``shards`` (names; default: all committed) that
    ``pipeline`` (default: built from ``cfg.stages``) mined: its stages' versions and declared features."""
    out = Path(cfg.output)
    pipeline = pipeline if pipeline is not None else StagePipeline.from_spec(cfg.stages)
    stage_names = pipeline.versions()
    df, audit, stats = read_evidence(out, shards)
    atomic_write_parquet(out / "dropped.parquet", audit)
    if df.empty:
        raise RuntimeError(f"no sample survived mining ({len(audit)} dropped; see {out / 'dropped.parquet'})")
    fits = crossfit_all(df, cfg, pipeline.feature_columns())
    records = df.to_dict("records")
    refiner = _refiner(cfg)
    rows = []
    for i, r in enumerate(records):
        probs = {m: (fits[m].probs[i] if m in fits else np.full(len(CANONICAL_LABELS), np.nan, np.float32))
                 for m in MODALITY_TRUTH}
        meta = json.loads(r["meta_json"])
        extra = meta.get("extra") or {}
        ha, hv = human_rated_probs(meta)
        origin, label, ties = r["origin"], r["label"], None
        target_label = target_subset = None
        if origin == "spliced":  # no true emotion: preference only; a training target only under a rule
            subset, margin, label = SPLICED, 0.0, None
            target_label, target_subset = splice_target(r["face_label"], r["voice_label"], cfg.train_mix.splice_target)
            evidence = {"visual": (probs["visual"], "cross-fitted face classifier"),
                        "audio": (probs["audio"], "cross-fitted voice classifier")}
        elif ha is not None and hv is not None:  # per-modality human ratings decide the subset
            subset, margin, label, ties = human_rated_subset(r["label"], extra.get("ratings") or {}, cfg.margin)
            origin = "human-rated"
            evidence = {"visual": (hv, "visual-only human ratings"), "audio": (ha, "audio-only human ratings")}
        else:
            subset, margin = assign_subset(r["label"], probs["audio"], probs["visual"], cfg.margin)
            evidence = {"visual": (probs["visual"], "cross-fitted face classifier"),
                        "audio": (probs["audio"], "cross-fitted voice classifier")}
        row = {
            "key": r["key"], "shard": r["shard"], "label": label, "acted_label": r["label"],
            "dataset": r["dataset"], "speaker": r["speaker"],
            "face_person": _text(extra.get("face_person")) or _text(r["speaker"]),
            "voice_person": _text(extra.get("voice_person")) or _text(r["speaker"]),
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
            "target_label": target_label, "target_subset": target_subset,
            "rating_ties": ",".join(m for m, t in ties.items() if t) or None if ties else None,
            "unrated": bool(extra.get("ratings_missing")),
            "ratings_unknown_names": int(extra.get("ratings_unknown_names") or 0),
        }
        row["truth_subset"] = truth_subset(row)
        descs = {k: json.loads(r[k]) if isinstance(r.get(k), str) else None
                 for k in ("audio_desc", "visual_desc", "text_desc")}
        cues = {"face_cue": _cue(*evidence["visual"]), "voice_cue": _cue(*evidence["audio"])}
        # a splice's caption follows its target rule (a training text); without one it names no emotion
        as_row = {**row, "label": target_label, "subset": target_subset or "ambiguous"} if origin == "spliced" else row
        reasoning, row["misleading_cue"] = build_reasoning({**as_row, **descs, **cues})
        if origin == "spliced" and target_label is None:  # the 'mixed cues' ending would claim a label
            reasoning = reasoning.rsplit(" The cues are weak or mixed", 1)[0] + (
                " A counterfactual splice: the face and the voice come from different recordings (the face "
                f"shows {r['face_label']}, the voice {r['voice_label']}), so the clip has no single true emotion.")
        row["caption_source"], row["caption_error"] = "template", None
        if refiner is not None:  # the refiner sees the reasoning only: the misleading cue stays apart
            reasoning, err = refiner.refine(reasoning, as_row["label"])
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
    return write_summary(out, conflicts, audit, stats, fits, split_res, cfg.splits,
                         splice_target=cfg.train_mix.splice_target)


def splice_target(face: str | None, voice: str | None, rule: str) -> tuple[str | None, str | None]:
    """``(target label, subset it makes)`` of a splice under the training rule ``rule`` (``none``: no
    target). ``face``: the face's emotion (a conflict becomes video_aligned), ``voice``: the voice's."""
    if rule == "none" or not (isinstance(face, str) and isinstance(voice, str)):
        return None, None
    if face == voice:
        return face, "consistent"
    return (face, "video_aligned") if rule == "face" else (voice, "audio_aligned")


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None  # pandas may hold a missing string as NaN


def _export_entry(r: dict[str, Any]) -> dict[str, Any]:
    entry = {"reason": r["reasoning"], "misleading_cue": _text(r["misleading_cue"]), "label": _text(r["label"]),
             "split": r["split"], "audio_pred": r["audio_pred"],
             "visual_pred": r["visual_pred"], "origin": r["origin"], "margin": r["margin"],
             "face_person": _text(r.get("face_person")), "voice_person": _text(r.get("voice_person"))}
    if r["origin"] == "spliced":
        entry.update(face_label=r["face_label"], voice_label=r["voice_label"],
                     conflict=r["face_label"] != r["voice_label"], target_label=_text(r.get("target_label")))
    return entry


def has_truth(r: dict[str, Any]) -> bool:
    """Whether a conflicts row's ``label`` is a truth: a natural clip's acted label, or a human-rated clip's
    audio-visual vote. A splice has none, nor a human-rated clip whose audio-visual vote is tied (its row
    keeps the acted label, ``rating_ties`` names ``audio_visual``)."""
    if _text(r.get("label")) is None:
        return False
    if r.get("origin") == "natural":
        return True
    return r.get("origin") == "human-rated" and "audio_visual" not in (_text(r.get("rating_ties")) or "").split(",")


def write_exports(out: Path, conflicts: pd.DataFrame) -> None:
    """The CA-MER-style subset files: ``{split}/{subset}.json`` for each split (the release's layout,
    ``test/video_aligned.json``, ...), and ``{subset}.json`` at the top holding every split's rows, each
    entry naming its ``split`` (unassigned rows appear only there). The three accuracy subsets hold only
    rows with a truth (natural, human-rated); ``ambiguous.json`` the rows with a truth (:func:`has_truth`)
    whose cues decided no subset (scored for accuracy, never in the conflict gap or conflict-mean); the
    counterfactual splices are in ``spliced.json`` of their own (``label`` null; ``face_label``,
    ``voice_label``, ``conflict``: what preference is scored from). Files of every split are written, empty
    ones too, so a split folder always has its five files."""
    truth = pd.Series([has_truth(r) for r in conflicts.to_dict("records")], index=conflicts.index, dtype=bool)
    for s in (*SUBSETS, SPLICED):
        part = conflicts[(conflicts["subset"] == s) & (truth if s == "ambiguous" else True)]
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
    default: left out). ``target`` is the label followed by the reasoning caption. A spliced row enters
    only with a ``target_label`` (the mine config's ``train_mix.splice_target`` rule: a counterfactual
    augmentation), under the subset the rule makes it (``target_subset``) and its ``target_label``;
    without a rule it is left out (it has no true emotion).
    """
    if "split" in conflicts:
        conflicts = conflicts[conflicts["split"] == "train"]
    if "origin" not in conflicts:  # a table from before origins: every row natural
        conflicts = conflicts.assign(origin="natural")
    spliced = conflicts["origin"] == "spliced"
    ruled = spliced & conflicts.get("target_label", pd.Series(None, index=conflicts.index)).notna()
    conflicts = conflicts[~spliced | ruled].copy()
    is_sp = conflicts["origin"] == "spliced"
    if is_sp.any():
        conflicts.loc[is_sp, "subset"] = conflicts.loc[is_sp, "target_subset"]
        conflicts.loc[is_sp, "label"] = conflicts.loc[is_sp, "target_label"]
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
                         "target": f"{r['label']}. {r['caption']}", "origin": r["origin"]})
    return pd.DataFrame(rows, columns=["key", "shard", "subset", "weight", "target", "origin"])
