"""Content hashes of stage inputs, the half of a cache key that is not the config.

``hash_paths`` hashes files by their bytes (SHA-256, read in 1 MiB blocks, never whole files in
memory) and folders as the sorted list of ``(relative path, file hash)`` pairs, so renaming, adding,
removing or editing any file changes the hash while touching a file (same bytes) does not.

Re-reading a large corpus on every pipeline run would cost as much as decoding it, so a
:class:`HashMemo` remembers each file's hash next to its ``(size, mtime_ns)``; a file whose size
and mtime are unchanged is not read again. Delete the memo file to force a full re-hash.

Files whose names start with ``.`` or ``_tmp`` and the ``*.tmp``/``*.partial`` files that a stage
writes before its atomic rename are skipped: they are not part of a committed input.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["HashMemo", "hash_file", "hash_paths", "iter_files"]

_BLOCK = 1 << 20  # 1 MiB: large enough for throughput, small enough to stream anything


def _skipped(name: str) -> bool:
    return name.startswith((".", "_tmp")) or name.endswith((".tmp", ".partial", ".lock"))


def iter_files(root: Path) -> Iterator[Path]:
    """Files under ``root`` (or ``root`` itself), sorted by relative path, temporaries skipped."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
        for name in sorted(filenames):
            if not _skipped(name):
                yield Path(dirpath) / name


def hash_file(path: Path) -> str:
    """SHA-256 hex digest of the file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


class HashMemo:
    """A JSON file mapping ``abs path -> [size, mtime_ns, sha256]``; saved atomically."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, list] = {}
        if self.path and self.path.is_file():
            try:
                self._data = json.loads(self.path.read_text())
            except (OSError, ValueError):  # a damaged memo only costs a re-hash
                self._data = {}
        self._dirty = False

    def file_hash(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        hit = self._data.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = hash_file(path)
        with self._lock:
            self._data[key] = [st.st_size, st.st_mtime_ns, digest]
            self._dirty = True
        return digest

    def save(self) -> None:
        if not (self.path and self._dirty):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".memo-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self._data, fh)
        os.replace(tmp, self.path)
        self._dirty = False


def hash_paths(paths: Iterable[str | Path], memo: HashMemo | None = None) -> str:
    """One hex digest for the contents of ``paths`` (files or folders), in the order given.

    A path that does not exist hashes as ``missing`` (the stage itself reports it as bad input).
    """
    memo = memo or HashMemo()
    outer = hashlib.sha256()
    for p in paths:
        root = Path(p)
        outer.update(f"path\0{root.name}\0".encode())
        if not root.exists():
            outer.update(b"missing\0")
            continue
        for f in iter_files(root):
            rel = f.name if f == root else f.relative_to(root).as_posix()
            outer.update(f"{rel}\0{memo.file_hash(f)}\0".encode())
    memo.save()
    return outer.hexdigest()
