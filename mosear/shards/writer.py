"""Write WebDataset shards atomically, with a Parquet index and a stats JSON commit marker.

Public API (reused by other stages, e.g. the mining stage's spliced-clip shards)::

    from mosear.shards.writer import ShardSample, ShardWriter, shard_name

    with ShardWriter(out_dir, split="train", index=0, config_hash="abc123") as w:
        w.write(ShardSample(key="ravdess__01-01-03-01-01-02-05", frames=frames_uint8_THW3,
                            audio=pcm_int16_or_float32, sample_rate=16000, meta={...}))
        w.fail(key="ravdess__bad", reason="corrupt", error="libav cannot open ...", meta={...})
    # on leaving the block without an exception:
    #   {out_dir}/{split}-{NNNNNN}.tar          (written as a hidden temp file, then renamed)
    #   {out_dir}/{split}-{NNNNNN}.index.parquet  one row per sample written or failed (INDEX_SCHEMA)
    #   {out_dir}/{split}-{NNNNNN}.stats.json     written last: the commit marker (config_hash, counts)
    # on an exception the temp file is removed and nothing is committed.

Members of a sample (contract in docs/contracts.md): ``{key}.frames.npy`` (uint8 ``[T, H, W, 3]``),
``{key}.wav`` (mono PCM s16le), ``{key}.json`` (metadata, sorted keys), and optional extra members
(``extra={"mp4": bytes}`` for a passthrough clip). Tar headers carry no time, user or group, so the
same samples give byte-identical tars.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tarfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mosear.atomic import atomic_open, atomic_write_json, atomic_write_parquet

__all__ = ["ShardSample", "ShardWriter", "shard_name", "INDEX_SCHEMA", "encode_wav", "KEY_RE"]

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")

INDEX_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("status", pa.string()),  # "ok" | "failed"
    ("reason", pa.string()),  # failure reason code (see mosear.media.decode.REASONS); null when ok
    ("error", pa.string()),  # human-readable failure message; null when ok
    ("dataset", pa.string()),
    ("clip_id", pa.string()),
    ("split", pa.string()),
    ("label", pa.string()),
    ("orig_label", pa.string()),
    ("speaker", pa.string()),
    ("source", pa.string()),
    ("source_sha256", pa.string()),  # SHA-256 of the clip file's bytes (null: spliced or failed)
    ("duration_s", pa.float64()),
    ("fps", pa.float64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("num_frames", pa.int32()),
    ("has_audio", pa.bool_()),
    ("audio_samples", pa.int64()),
    ("rotation", pa.int32()),  # display-matrix rotation applied to the frames, degrees counter-clockwise
    ("mirrored", pa.bool_()),  # ... followed by a horizontal flip
    ("num_warnings", pa.int32()),  # libav warnings while decoding (0: a clean decode); null when failed
    ("warnings", pa.list_(pa.string())),  # the first of them (mosear.media.decode.MAX_WARNINGS)
    ("offset", pa.int64()),  # byte offset of the sample's first tar header (random access)
    ("nbytes", pa.int64()),  # bytes of the sample's members incl. headers
])


def shard_name(split: str, index: int) -> str:
    """``{split}-{NNNNNN}`` (no extension)."""
    if not KEY_RE.match(split):
        raise ValueError(f"split {split!r}: use [A-Za-z0-9_-]")
    return f"{split}-{index:06d}"


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono PCM s16le WAV bytes from int16 samples or float samples in [-1, 1]."""
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono [N], got shape {a.shape}")
    if a.dtype != np.int16:
        a = (np.clip(a.astype(np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(a.astype("<i2").tobytes())
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


@dataclass
class ShardSample:
    """One sample to write. ``frames`` uint8 [T, H, W, 3]; ``audio`` mono int16 or float32 in [-1, 1]."""

    key: str
    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    meta: dict[str, Any]
    extra: dict[str, bytes] = field(default_factory=dict)  # member extension -> bytes (e.g. {"mp4": b"..."})


def _index_row(key: str, meta: dict[str, Any], **kw: Any) -> dict[str, Any]:
    row = {name: None for name in INDEX_SCHEMA.names}
    for name in INDEX_SCHEMA.names:
        if name in meta:
            row[name] = meta[name]
    row["key"] = key
    row.update(kw)
    return row


class ShardWriter:
    """Writes one shard; see the module docstring. Not thread-safe; one writer per shard."""

    def __init__(self, out_dir: str | Path, split: str, index: int, config_hash: str,
                 extra_stats: dict[str, Any] | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.name = shard_name(split, index)
        self.split, self.index, self.config_hash = split, index, config_hash
        self.extra_stats = dict(extra_stats or {})
        self.tar_path = self.out_dir / f"{self.name}.tar"
        self.index_path = self.out_dir / f"{self.name}.index.parquet"
        self.stats_path = self.out_dir / f"{self.name}.stats.json"
        # A unique temp name per attempt (mosear.atomic): a retried or zombie writer never writes into
        # another's file; the tar appears under its name only once complete and fsynced.
        self._stack = contextlib.ExitStack()
        self._fh = self._stack.enter_context(atomic_open(self.tar_path, "wb"))
        self._sha = hashlib.sha256()
        # PAX: plain ustar headers (byte for byte what USTAR_FORMAT writes) for every name that fits 100
        # characters, a PAX extended header for a longer one, which USTAR cannot hold at all
        self._tar = tarfile.open(fileobj=_HashingWriter(self._fh, self._sha), mode="w", format=tarfile.PAX_FORMAT)
        self._rows: list[dict[str, Any]] = []
        self._keys: set[str] = set()
        self._reasons: dict[str, int] = {}
        self._media_s = 0.0
        self._t0 = time.time()
        self._closed = False

    # writing ----------------------------------------------------------------------------------
    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o444, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def _check_key(self, key: str) -> None:
        if not KEY_RE.match(key):
            raise ValueError(f"sample key {key!r}: only [A-Za-z0-9_-] (a dot would split a WebDataset key)")
        if key in self._keys:
            raise ValueError(f"sample key {key!r} is already in shard {self.name}")
        self._keys.add(key)

    def write(self, sample: ShardSample) -> None:
        """Append one sample (frames, wav, json, extras) to the tar and its row to the index."""
        self._check_key(sample.key)
        frames = np.asarray(sample.frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"{sample.key}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        meta = dict(sample.meta)
        meta.setdefault("key", sample.key)
        meta.setdefault("num_frames", int(frames.shape[0]))
        meta.setdefault("sample_rate", int(sample.sample_rate))
        offset = self._tar.offset
        self._add(f"{sample.key}.frames.npy", _npy(frames))
        self._add(f"{sample.key}.wav", encode_wav(sample.audio, sample.sample_rate))
        self._add(f"{sample.key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        for ext, data in sorted(sample.extra.items()):
            self._add(f"{sample.key}.{ext}", data)
        self._rows.append(_index_row(
            sample.key, meta, status="ok", reason=None, error=None, audio_samples=int(len(sample.audio)),
            height=int(meta.get("height") or 0) or None, offset=offset, nbytes=self._tar.offset - offset,
        ))
        self._media_s += float(meta.get("duration_s") or 0.0)

    def fail(self, key: str, reason: str, error: str, meta: dict[str, Any] | None = None) -> None:
        """Record an input that could not be written (it goes to quarantine.parquet via the index)."""
        self._check_key(key)
        self._rows.append(_index_row(key, meta or {}, status="failed", reason=reason, error=error))
        self._reasons[reason] = self._reasons.get(reason, 0) + 1

    # committing -------------------------------------------------------------------------------
    def close(self) -> dict[str, Any]:
        """Finish the tar, rename it into place, write the index, then the stats JSON (the commit)."""
        if self._closed:
            raise RuntimeError(f"shard {self.name} is already closed")
        self._closed = True
        self._tar.close()
        self._stack.close()  # fsync, rename into place, fsync the folder
        atomic_write_parquet(self.index_path, pa.Table.from_pylist(self._rows, schema=INDEX_SCHEMA))
        n_ok = sum(r["status"] == "ok" for r in self._rows)
        warned = [r for r in self._rows if r["num_warnings"]]
        stats = {
            "shard": self.name,
            "split": self.split,
            "index": self.index,
            "config_hash": self.config_hash,
            "num_samples": n_ok,
            "num_failed": len(self._rows) - n_ok,
            "keys_digest": hashlib.sha256("\n".join(r["key"] for r in self._rows).encode()).hexdigest()[:16],
            "failures": dict(sorted(self._reasons.items())),
            # samples written despite decoder warnings (kept; the index's `warnings` column says what)
            "warnings": {"samples": len(warned), "messages": sum(int(r["num_warnings"]) for r in warned)},
            "media_seconds": round(self._media_s, 3),
            "tar_bytes": self.tar_path.stat().st_size,
            "tar_sha256": self._sha.hexdigest(),
            "wall_s": round(time.time() - self._t0, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **self.extra_stats,
        }
        atomic_write_json(self.stats_path, stats, indent=1, sort_keys=True)  # last: the commit
        return stats

    def abort(self) -> None:
        """Drop the partial shard (nothing is committed)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._tar.close()
        # leaving atomic_open with an exception removes the temporary file and commits nothing
        self._stack.__exit__(RuntimeError, RuntimeError("shard aborted"), None)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


class _HashingWriter:
    """File wrapper that hashes what is written (the tar's sha256 without re-reading it)."""

    def __init__(self, fh, sha):
        self._fh, self._sha = fh, sha

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        return self._fh.write(data)

    def tell(self) -> int:
        return self._fh.tell()

