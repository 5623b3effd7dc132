"""The mined feature table: per-clip evidence vectors kept as model inputs (``mined/features.parquet``).

Mining computes them anyway; writing them once lets training and evaluation use them as modality
tokens (``model.inputs=features``, :mod:`mosear.model.features` has the format) without decoding or
encoding a clip again:

- ``visual`` float32[99] = ``visual_expr`` (11: the expression model's mean scores over the face
  frames, in CANONICAL_LABELS order) + ``visual_feats`` (88: mean/max/std of its 7 scores, face
  coverage, size, motion, 8x8 pooled face; :mod:`mosear.mine.stages.visual`), from whichever visual
  stage ran (``visual_fer`` or ``visual_facex``); NaN without a face;
- ``audio`` = the audio evidence the pipeline computed, in this order: openSMILE eGeMAPS v02 functionals
  (``audio_feats``, 88; ``audio_egemaps``) and Whisper tiny.en's pooled encoder output
  (``audio_whisper``, 768; ``audio_whisper``), each when its stage ran: float32[88], [768] or [856].
  NaN when the audio is silent.

So the model's feature tokens read exactly the evidence the mining config chose. A row is written for
every mined key; a modality none of whose stages ran is absent (None). The table's metadata names the
columns each modality concatenates (``source``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mosear.model.features import FEATURES_FILE, write_features_table

__all__ = ["write_features", "VISUAL_COLUMNS", "AUDIO_COLUMNS"]

VISUAL_COLUMNS = ("visual_expr", "visual_feats")
AUDIO_COLUMNS = ("audio_feats", "audio_whisper")  # each one used when the evidence has it


def _vector(row: dict, cols: list[str]) -> np.ndarray | None:
    parts = [np.asarray(row[c], np.float32).reshape(-1) for c in cols if row.get(c) is not None]
    return np.concatenate(parts) if cols and len(parts) == len(cols) else None


def write_features(out_dir: str | Path, shards: list[str] | None = None) -> Path | None:
    """Write ``{out_dir}/features.parquet`` from the committed evidence of ``shards`` (default: all);
    None when no evidence has visual or audio features."""
    ev = Path(out_dir) / "evidence"
    stats = [json.loads(p.read_text()) for p in sorted(ev.glob("*.stats.json"))]
    names = [s["shard"] for s in stats if s["status"] == "ok" and (shards is None or s["shard"] in set(shards))]
    rows, dims, used = [], {}, {}
    for name in names:
        path = ev / f"{name}.parquet"
        if not path.is_file() or not path.stat().st_size:
            continue
        have = set(pq.read_schema(path).names)
        if "key" not in have:  # every sample of the shard was dropped: an evidence table with no columns
            continue
        vcols = [c for c in VISUAL_COLUMNS if c in have] if set(VISUAL_COLUMNS) <= have else []
        acols = [c for c in AUDIO_COLUMNS if c in have]
        for m, cols in (("visual", vcols), ("audio", acols)):
            if cols and used.setdefault(m, cols) != cols:  # one mining run has one pipeline
                raise ValueError(f"{path}: {m} evidence columns {cols}, other shards have {used[m]}")
        df = pd.read_parquet(path, columns=["key", *vcols, *acols])
        for r in df.to_dict("records"):
            v, a = _vector(r, vcols), _vector(r, acols)
            if v is not None:
                dims.setdefault("visual", v.size)
            if a is not None:
                dims.setdefault("audio", a.size)
            rows.append({"key": r["key"], "visual": v, "audio": a})
    if not rows or not dims:
        return None
    dims = {"visual": dims.get("visual", 1), "audio": dims.get("audio", 1)}
    return write_features_table(Path(out_dir) / FEATURES_FILE, rows, dims, {
        m: "mine: " + " + ".join(used.get(m, [])) for m in ("visual", "audio")})
