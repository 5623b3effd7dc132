"""Read committed shards back: sample dicts ready for torch.

``list_shards(dir)`` lists the tars whose stats JSON exists (committed shards only), sorted;
``iter_samples(shards)`` streams samples as
``{"key": str, "frames": uint8 [T, H, W, 3], "audio": float32 [N] in [-1, 1], "sample_rate": int,
"meta": dict}`` plus any extra members under their extension (e.g. ``"mp4": bytes``);
``ShardIterableDataset`` (:mod:`mosear.shards.torch_dataset`, also ``mosear.shards.ShardIterableDataset``;
it imports torch, this module never does) is a torch ``IterableDataset`` over them that splits shards
by distributed rank and by DataLoader worker. Tars are read as a stream (``tarfile`` "r|"): one sample in memory.

Consumers never trust a shard's record over its bytes: before a committed shard is first read in a
process, :func:`verify_shard` hashes the tar and compares it with the ``tar_sha256`` its commit marker
recorded when it was written; a mismatch (a tar changed, truncated or replaced after its commit) is a
:class:`ShardDigestError` naming the file. The digest is remembered per file stat for the process
(:class:`mosear.identity.DigestMemo`), so a shard read every epoch is hashed once.
"""

from __future__ import annotations

import io
import json
import tarfile
import wave
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

__all__ = ["list_shards", "iter_samples", "ShardIterableDataset", "read_stats", "decode_wav", "verify_shard",
           "ShardDigestError"]

_VERIFIED = None  # this process's DigestMemo of tars (in memory only; consumers never write into the input)


class ShardDigestError(ValueError):
    """A shard's bytes do not match the ``tar_sha256`` its commit marker recorded."""


def verify_shard(tar: str | Path) -> None:
    """Check ``tar``'s bytes against its commit marker's ``tar_sha256`` (once per file stat in this process).

    A tar without a commit marker or without a recorded digest is not checked (nothing to compare with).
    """
    global _VERIFIED
    from mosear.identity import DigestMemo

    tar = Path(tar)
    stats = read_stats(tar)
    want = (stats or {}).get("tar_sha256")
    if not want:
        return
    if _VERIFIED is None:
        _VERIFIED = DigestMemo()
    got = _VERIFIED.digest(tar)
    if got != want:
        raise ShardDigestError(f"{tar}: its bytes (sha256 {got[:16]}...) are not those its commit marker records "
                               f"(tar_sha256 {want[:16]}...): the shard changed after it was written; delete "
                               f"it (tar and .stats.json) and rerun `mosear shard` to rebuild it")


def read_stats(tar: str | Path) -> dict[str, Any] | None:
    """The stats JSON (commit marker) of a shard, or None when the shard is not committed."""
    tar = Path(tar)
    stats = tar.with_name(tar.name[: -len(".tar")] + ".stats.json")
    if not stats.is_file():
        return None
    return json.loads(stats.read_text())


def list_shards(directory: str | Path, split: str | None = None, config_hash: str | None = None) -> list[Path]:
    """Committed shards of ``directory`` (tar + stats JSON), sorted; optionally one split / config."""
    d = Path(directory)
    out = []
    for tar in sorted(d.glob("*.tar")):
        stats = read_stats(tar)
        if stats is None:
            continue
        if split is not None and stats.get("split") != split:
            continue
        if config_hash is not None and stats.get("config_hash") != config_hash:
            raise ValueError(f"{tar.name} was written by config {stats.get('config_hash')}, expected {config_hash}")
        out.append(tar)
    return out


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono 16-bit WAV bytes -> (float32 [N] in [-1, 1], sample rate)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        rate, ch = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if ch > 1:
        pcm = pcm.reshape(-1, ch).mean(axis=1)
    return (pcm.astype(np.float32) / 32768.0), rate


def _decode(key: str, members: dict[str, bytes]) -> dict[str, Any]:
    sample: dict[str, Any] = {"key": key}
    for ext, data in members.items():
        if ext == "frames.npy":
            sample["frames"] = np.load(io.BytesIO(data), allow_pickle=False)
        elif ext == "wav":
            sample["audio"], sample["sample_rate"] = decode_wav(data)
        elif ext == "json":
            sample["meta"] = json.loads(data)
        else:
            sample[ext] = data
    return sample


def _iter_tar(path: Path) -> Iterator[dict[str, Any]]:
    key, members = None, {}
    with tarfile.open(path, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            k, _, ext = base.partition(".")
            if k != key:
                if key is not None:
                    yield _decode(key, members)
                key, members = k, {}
            members[ext] = tar.extractfile(info).read()
    if key is not None:
        yield _decode(key, members)


def iter_samples(shards: Iterable[str | Path] | str | Path) -> Iterator[dict[str, Any]]:
    """Samples of ``shards`` (a list of tars, or a shard folder) in order."""
    if isinstance(shards, (str, Path)) and Path(shards).is_dir():
        shards = list_shards(shards)
    elif isinstance(shards, (str, Path)):
        shards = [shards]
    for tar in shards:
        verify_shard(tar)
        yield from _iter_tar(Path(tar))

