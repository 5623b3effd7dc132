"""Precomputed features as modality tokens (``ModelConfig.inputs = "features"``).

Emotion-LLaMA feeds precomputed encoder features (FaceMAE, VideoMAE, HuBERT) to the LLM through linear
projectors; this is the same path for any per-clip or per-frame features: each modality's features go
through their own trainable :class:`FeatureProjector` into ``N`` tokens of the LLM's width, and the
encoder towers are not built at all.

**Feature table** (``features.parquet``, one row per sample key)::

    key     string                       the sample key ({dataset}__{clip_id}), as in the shards
    visual  list<float32>  [T_v * D_v]   visual features of the clip, T_v vectors of D_v, row-major
    audio   list<float32>  [T_a * D_a]   audio features, likewise

and the schema metadata ``mosear.features`` = ``{"visual": {"dim": D_v, "source": ...}, "audio": {...}}``.
``T = len / dim`` may differ per clip (frame-level features) or be 1 (clip-level). NaN marks missing
evidence (no face found, silent audio): it is standardised to 0, the training mean.

``mosear mine`` writes one (:mod:`mosear.mine.features`) from the evidence its stages computed: the
expression model's scores and the face statistics per clip (``visual_fer`` or ``visual_facex``), and
the audio stages that ran, concatenated (openSMILE eGeMAPS v02 functionals, Whisper tiny.en's pooled
encoder output); the table's metadata names the columns. MER2023's released per-clip features
(one ``{name}.npy`` per clip and extractor, ``[D]`` utterance-level or ``[T, D]`` frame-level) are
converted with :func:`features_from_npy`.

**Projector** (per modality): ``x`` ``[B, N, D]`` (the clip's ``T`` vectors pooled to ``N`` by
:func:`pool_vectors`) → per-dimension standardisation ``(x − μ) / σ`` with μ, σ the running
mean/variance over every training sample seen (Welford, NaN ignored; frozen outside training, saved with
the adapter) → clamp to ±5 → ``Linear(D, H)`` → GELU → ``Linear(H, H)`` → ``+ e_n`` (a learned
embedding per token position, so the ``N`` tokens of a clip-level vector differ) → ``[B, N, H]``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["FEATURES_FILE", "FeatureProjector", "FeatureEncoder", "pool_vectors", "load_features",
           "write_features_table", "features_from_npy"]

FEATURES_FILE = "features.parquet"
MODALITIES = ("visual", "audio")


def pool_vectors(x: np.ndarray, n: int, dim: int) -> np.ndarray:
    """Flat or ``[T, D]`` features -> float32 ``[n, D]``: ``T`` split into ``n`` near-equal runs, each
    averaged (NaN-aware); with ``T < n`` vectors are repeated. ``x is None`` gives all NaN (missing)."""
    if x is None:
        return np.full((n, dim), np.nan, np.float32)
    a = np.asarray(x, dtype=np.float32).reshape(-1, dim) if np.size(x) else np.full((1, dim), np.nan, np.float32)
    T = a.shape[0]
    if T <= n:
        return a[np.floor(np.arange(n) * T / n).astype(int)]
    out = np.empty((n, dim), np.float32)
    bounds = np.linspace(0, T, n + 1).round().astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN run stays NaN (missing evidence)
        for i in range(n):
            out[i] = np.nanmean(a[bounds[i]:bounds[i + 1]], axis=0)
    return out


class FeatureProjector(nn.Module):
    """Standardise (running training statistics), clamp, project, add token embeddings: ``[B, N, D] -> [B, N, H]``."""

    def __init__(self, dim: int, num_tokens: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.tokens = nn.Parameter(torch.randn(num_tokens, hidden) * 0.02)

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        """Welford's merge of a batch into the running per-dimension mean / sum of squares (NaN ignored)."""
        v = x.reshape(-1, x.shape[-1]).double()
        ok = ~torch.isnan(v)
        n_b = ok.sum(0).double()
        if not bool((n_b > 0).any()):
            return
        mean_b = torch.where(ok, v, 0.0).sum(0) / n_b.clamp(min=1)
        m2_b = torch.where(ok, (v - mean_b) ** 2, 0.0).sum(0)
        n = self.count + n_b
        delta = mean_b - self.mean
        keep = n_b > 0
        self.mean.copy_(torch.where(keep, self.mean + delta * n_b / n.clamp(min=1), self.mean))
        self.m2.copy_(torch.where(keep, self.m2 + m2_b + delta ** 2 * self.count * n_b / n.clamp(min=1), self.m2))
        self.count.copy_(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._update(x)
        var = torch.where(self.count > 1, self.m2 / (self.count - 1).clamp(min=1), torch.ones_like(self.m2))
        z = (x.double() - self.mean) / (var.sqrt() + 1e-6)
        z = torch.nan_to_num(z, nan=0.0).clamp(-5.0, 5.0).to(self.mlp[0].weight.dtype)
        return self.mlp(z) + self.tokens.to(z.dtype)


class FeatureEncoder(nn.Module):
    """Stands where :class:`~mosear.model.encoders.VisualEncoder` / ``AudioEncoder`` stand, without a tower:
    ``features`` ``[B, N, D]`` (collated by the prompt builder) -> ``[B, N, H]``."""

    tower = None  # nothing frozen to encode: the features are the encoder's output

    def __init__(self, dim: int, num_tokens: int, llm_hidden: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_tokens = num_tokens
        self.projector = FeatureProjector(dim, num_tokens, llm_hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.dim:
            raise ValueError(f"features have {features.shape[-1]} dimensions, the projector expects {self.dim}")
        return self.projector(features.to(self.projector.mlp[0].weight.device))


def write_features_table(path: str | Path, rows: list[dict[str, Any]], dims: dict[str, int],
                         sources: dict[str, str]) -> Path:
    """Write ``rows`` (``{"key", "visual": array|None, "audio": array|None}``) as a feature table (atomic)."""
    import pyarrow as pa

    from mosear.atomic import atomic_write_parquet

    def flat(v: Any, dim: int) -> list[float] | None:
        if v is None:
            return None
        a = np.asarray(v, np.float32).reshape(-1)
        if a.size % dim:
            raise ValueError(f"a feature array of {a.size} values is not a multiple of its dimension {dim}")
        return a.tolist()

    table = pa.table({
        "key": pa.array([r["key"] for r in rows], pa.string()),
        **{m: pa.array([flat(r.get(m), dims[m]) for r in rows], pa.list_(pa.float32())) for m in MODALITIES},
    })
    meta = {m: {"dim": int(dims[m]), "source": sources.get(m, "")} for m in MODALITIES}
    table = table.replace_schema_metadata({b"mosear.features": json.dumps(meta).encode()})
    return atomic_write_parquet(path, table)


def load_features(path: str | Path) -> tuple[dict[str, dict[str, np.ndarray | None]], dict[str, int]]:
    """``({key: {"visual": float32[T*D] | None, "audio": ...}}, {"visual": D_v, "audio": D_a})``.

    Per-clip vectors are small (a few hundred floats), so a worker holds the table of the keys it uses.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"feature table {p} does not exist (mosear mine writes mined/{FEATURES_FILE}; "
                                "see mosear.model.features for the format)")
    table = pq.read_table(p)
    raw = (table.schema.metadata or {}).get(b"mosear.features")
    missing = {"key", *MODALITIES} - set(table.column_names)
    if raw is None or missing:
        raise ValueError(f"{p}: not a mosear feature table (needs columns key, visual, audio and "
                         f"mosear.features metadata; missing {sorted(missing) or 'metadata'})")
    dims = {m: int(v["dim"]) for m, v in json.loads(raw).items()}
    out: dict[str, dict[str, np.ndarray | None]] = {}
    cols = {m: table.column(m).to_pylist() for m in MODALITIES}
    for i, key in enumerate(table.column("key").to_pylist()):
        out[key] = {m: (np.asarray(cols[m][i], np.float32) if cols[m][i] is not None else None) for m in MODALITIES}
    return out, dims


def features_from_npy(out: str | Path, visual_dir: str | Path, audio_dir: str | Path,
                      key_prefix: str = "mer2023") -> Path:
    """A feature table from per-clip ``.npy`` folders (MER2023's released features: one folder per
    extractor, ``{name}.npy`` of shape ``[D]`` or ``[T, D]``); keys ``{key_prefix}__{name}`` as the
    ``mer2023`` shard adapter writes them. A clip missing from one folder gets None for that modality."""
    from mosear.adapters.base import safe_id

    found: dict[str, dict[str, np.ndarray]] = {}
    dims: dict[str, int] = {}
    for m, d in (("visual", visual_dir), ("audio", audio_dir)):
        files = sorted(Path(d).glob("*.npy"))
        if not files:
            raise FileNotFoundError(f"{d}: no .npy feature files")
        for f in files:
            a = np.load(f, allow_pickle=False).astype(np.float32)
            a = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
            if dims.setdefault(m, a.shape[-1]) != a.shape[-1]:
                raise ValueError(f"{f}: dimension {a.shape[-1]}, other {m} files have {dims[m]}")
            found.setdefault(f"{key_prefix}__{safe_id(f.stem)}", {})[m] = a
    rows = [{"key": k, **v} for k, v in sorted(found.items())]
    return write_features_table(out, rows, dims, {"visual": str(visual_dir), "audio": str(audio_dir)})
