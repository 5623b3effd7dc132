"""Which sample keys a checkpoint trained on: recorded in the adapter, checked by ``mosear eval``.

A training run writes ``train_keys.json`` into every checkpoint's adapter folder (beside
``model_config.json``, so it travels with ``{output}/adapter``)::

    {"digest": "sha256:<hex of the sorted keys joined by newlines>", "count": n,
     "source": "mix: mined/train_mix.parquet" | "shards (labelled samples)", "keys": [sorted keys],
     "source_sha256": {key: SHA-256 of the clip file's bytes}, "sources_digest": "sha256:<hex>"}

The keys are those the data stream can yield: the mix's keys with a positive weight that the shards
hold (or, without a mix, every labelled sample of the shards). ``source_sha256`` is what the shard
index recorded for each (``source_sha256``; absent for spliced clips and for shards written before the
column existed). ``mosear eval`` refuses a benchmark that shares clips with them unless
``allow_overlap: true`` (:mod:`mosear.evaluate.protocol`): by key, by the clip's bytes, or by the MER
family's own clip name (:func:`mosear.adapters._mer_files.mer_clip_name`), whatever the dataset prefixes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from mosear.atomic import atomic_write_json

__all__ = ["TRAIN_KEYS_FILE", "TrainKeys", "keys_digest", "write_train_keys", "read_train_keys"]

TRAIN_KEYS_FILE = "train_keys.json"


def keys_digest(keys) -> str:
    """``sha256:`` + hex digest of the sorted, de-duplicated keys joined by newlines."""
    return "sha256:" + hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()


@dataclass(frozen=True)
class TrainKeys:
    digest: str
    keys: frozenset[str]
    source: str
    sources: dict[str, str] = field(default_factory=dict)  # key -> SHA-256 of its clip file's bytes

    @property
    def count(self) -> int:
        return len(self.keys)


def _sources_digest(sources: dict[str, str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(f"{k}\t{v}" for k, v in sorted(sources.items())).encode()).hexdigest()


def write_train_keys(adapter_dir: str | Path, keys, source: str, sources: dict[str, str] | None = None) -> Path:
    """Write ``train_keys.json`` into ``adapter_dir`` (atomically); returns its path. ``sources``: key ->
    the clip's byte digest, for the keys that have one (others are ignored)."""
    ks = sorted(set(keys))
    path = Path(adapter_dir) / TRAIN_KEYS_FILE
    srcs = {k: v for k, v in sorted((sources or {}).items()) if k in set(ks) and v}
    atomic_write_json(path, {"digest": keys_digest(ks), "count": len(ks), "source": source, "keys": ks,
                             "source_sha256": srcs, "sources_digest": _sources_digest(srcs)}, indent=0)
    return path


def read_train_keys(adapter_dir: str | Path) -> TrainKeys | None:
    """The recorded keys of an adapter folder; None when it has none (a checkpoint from before they were
    recorded). A file whose keys do not match its digest raises ValueError (edited or damaged)."""
    path = Path(adapter_dir) / TRAIN_KEYS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    keys = data.get("keys")
    if not isinstance(keys, list) or keys_digest(keys) != data.get("digest"):
        raise ValueError(f"{path}: the key list does not match its digest (damaged or edited file)")
    sources = data.get("source_sha256") or {}  # absent in files written before it was recorded
    if sources and (not isinstance(sources, dict) or _sources_digest(sources) != data.get("sources_digest")):
        raise ValueError(f"{path}: source_sha256 does not match its digest (damaged or edited file)")
    return TrainKeys(data["digest"], frozenset(keys), str(data.get("source", "")), dict(sources))
