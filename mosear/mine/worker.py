"""Mining one shard: stream its samples through the stage pipeline, write evidence, audit and stats.

Per shard ``{name}`` under ``{output}/evidence/``:

- ``{name}.parquet``        one row per kept sample: key, shard, label, speaker, takes, per-modality
                            truth (spliced clips), every field the stages added (arrays as lists, dicts
                            as JSON text), the sample's metadata as JSON;
- ``{name}.audit.parquet``  one row per dropped or failed sample: key, stage, reason, detail (a sample
                            with a value Arrow cannot store is one of them, ``unstorable``: the
                            pipeline checks each field as a stage sets it);
- ``{name}.stats.json``     written last (the commit marker): counts, per-stage stats, config hash.

A shard whose stats file exists with status ok, the same stage config hash and the same input digest
(the input tar's ``tar_sha256``: its content, so a shard rebuilt with other bytes under the same name
is mined again) is finished and never mined again.
"""

from __future__ import annotations

import json
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from mosear.atomic import atomic_write_json, atomic_write_parquet
from mosear.mine.stage_pipeline import MEDIA_FIELDS, StagePipeline, stored_value

AUDIT_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("stage", pa.string()),
                          ("reason", pa.string()), ("detail", pa.string())])


def shard_name(shard: str | Path) -> str:
    return Path(shard).name.removesuffix(".tar")


def take_id(meta: dict[str, Any]) -> str:
    """The recording a clip comes from. RAVDESS codes minus modality/channel name one take, shared by
    the full-AV clip and its audio-only twin (``01-01-03-...`` and ``03-01-03-...``)."""
    clip = str(meta.get("clip_id") or meta.get("key") or "")
    parts = clip.split("-")
    if meta.get("dataset") == "ravdess" and len(parts) == 7:
        return "ravdess:" + "-".join(parts[2:])
    return f"{meta.get('dataset')}:{clip}"


def evidence_row(sample: dict[str, Any], shard: str) -> dict[str, Any]:
    meta = sample.get("meta") or {}
    extra = meta.get("extra") or {}
    row = {
        "key": sample.get("key"),
        "shard": shard,
        "label": meta.get("label"),
        "dataset": meta.get("dataset"),
        "speaker": None if meta.get("speaker") is None else str(meta.get("speaker")),
        "origin": extra.get("origin", "natural"),
        "face_label": extra.get("face_label"),
        "voice_label": extra.get("voice_label"),
        "face_take": extra.get("face_take") or take_id(meta),
        "voice_take": extra.get("voice_take") or take_id(meta),
        "meta_json": stored_value(meta),
    }
    for k, v in sample.items():
        if k not in MEDIA_FIELDS:
            row[k] = stored_value(v)
    return row


def _batched(it: Iterator[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    while batch := list(islice(it, n)):
        yield batch


def _write_parquet(rows: list[dict[str, Any]], path: Path, schema: pa.Schema | None = None) -> None:
    table = pa.Table.from_pylist(rows, schema=schema) if rows or schema is not None else pa.table({})
    atomic_write_parquet(path, table)


def input_hash(shard: str | Path) -> str | None:
    """The content digest of the input shard: the ``tar_sha256`` its commit marker records (None
    when it has none). The shard stage computes it while writing the tar."""
    from mosear.shards.reader import read_stats

    try:
        st = read_stats(shard)
    except (OSError, ValueError):
        return None
    return None if st is None else st.get("tar_sha256")


def is_done(out_dir: Path, shard: str | Path, config_hash: str) -> bool:
    """True when the shard's evidence is committed by this stage config from this very input shard."""
    p = Path(out_dir) / "evidence" / f"{shard_name(shard)}.stats.json"
    if not p.is_file():
        return False
    try:
        st = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    return (st.get("config_hash") == config_hash and st.get("status") == "ok"
            and st.get("input_hash") is not None and st.get("input_hash") == input_hash(shard))


def mine_shard(shard: str | Path, out_dir: str | Path, pipeline: StagePipeline, batch_size: int,
               config_hash: str) -> dict[str, Any]:
    """Mine one shard end to end; returns its stats dict (also written as the commit marker)."""
    from mosear.shards.reader import iter_samples

    name = shard_name(shard)
    digest = input_hash(shard)  # before reading: a shard replaced meanwhile is never recorded as this one
    ev_dir = Path(out_dir) / "evidence"
    ev_dir.mkdir(parents=True, exist_ok=True)
    pipeline.reset_stats()
    rows: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    n_in, status, error = 0, "ok", None
    t0 = time.perf_counter()
    try:
        for batch in _batched(iter(iter_samples([Path(shard)])), batch_size):
            n_in += len(batch)
            kept, drops = pipeline.run_batch(batch)
            rows.extend(evidence_row(s, name) for s in kept)
            audit.extend({**d, "shard": name} for d in drops)
    except Exception as exc:  # an unreadable shard: recorded, not committed, retried on the next run
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    try:
        _write_parquet(rows, ev_dir / f"{name}.parquet")
        _write_parquet(audit, ev_dir / f"{name}.audit.parquet", AUDIT_SCHEMA)
    except (pa.ArrowException, TypeError, ValueError, OSError) as exc:  # a disk error; bad values were dropped
        status, error = "failed", f"writing evidence: {type(exc).__name__}: {exc}"
    stats = {
        "shard": name, "source": str(shard), "status": status, "error": error, "config_hash": config_hash,
        "input_hash": digest,
        "samples_in": n_in, "samples_out": len(rows), "dropped": len(audit),
        "seconds": round(time.perf_counter() - t0, 3),
        "stages": [s.to_dict() for s in pipeline.stats.values()],
    }
    atomic_write_json(ev_dir / f"{name}.stats.json", stats, indent=1)  # last: the shard's commit
    return stats


class ShardMiner:
    """Ray actor: builds the pipeline (loads models) once, then mines one shard per :meth:`mine` call."""

    def __init__(self, stages: list[Any], out_dir: str, batch_size: int, config_hash: str,
                 import_paths: list[str] | None = None) -> None:
        import sys

        for p in import_paths or []:  # stages from local folders (MineConfig.py_modules)
            if p not in sys.path:
                sys.path.insert(0, p)
        self.pipeline = StagePipeline.from_spec(stages)
        self.pipeline.setup()
        self.out_dir, self.batch_size, self.config_hash = out_dir, batch_size, config_hash

    def mine(self, shard: str) -> dict[str, Any]:
        """Mine ``shard`` (see :func:`mine_shard`); returns its stats dict."""
        return mine_shard(shard, self.out_dir, self.pipeline, self.batch_size, self.config_hash)
