"""Which sample keys a checkpoint trained on: recorded in the adapter, checked by ``mosear eval``.

A training run writes ``train_keys.json`` into every checkpoint's adapter folder (beside
``model_config.json``, so it travels with ``{output}/adapter``)::

    {"digest": "sha256:<hex of the sorted keys joined by newlines>", "count": n,
     "source": "mix: mined/train_mix.parquet" | "shards (labelled samples)", "keys": [sorted keys]}

The keys are those the data stream can yield: the mix's keys with a positive weight that the shards
hold (or, without a mix, every labelled sample of the shards). ``mosear eval`` refuses a benchmark
that shares keys with them unless ``allow_overlap: true`` (:func:`overlap`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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

    @property
    def count(self) -> int:
        return len(self.keys)


def write_train_keys(adapter_dir: str | Path, keys, source: str) -> Path:
    """Write ``train_keys.json`` into ``adapter_dir`` (atomically); returns its path."""
    ks = sorted(set(keys))
    path = Path(adapter_dir) / TRAIN_KEYS_FILE
    atomic_write_json(path, {"digest": keys_digest(ks), "count": len(ks), "source": source, "keys": ks}, indent=0)
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
    return TrainKeys(data["digest"], frozenset(keys), str(data.get("source", "")))
