"""One way to write an output: all of it or none of it, under its final name only when complete.

Every file a stage writes goes through :func:`atomic_open` (or the helpers built on it): the bytes go to
a temporary file in the destination's own folder (same file system, so the rename is atomic), are
flushed and fsynced, the file is renamed over the destination, and the folder is fsynced so the rename
itself survives a power cut. A reader sees the old file or the new one, never a half-written one; a
process killed mid-write leaves only a ``.*.tmp-*`` file, which :func:`remove_stale_temps` clears.

:func:`swap_dir` does the same for a folder (an exported adapter): the new folder is staged beside the
destination, every file in it (at any depth: the peft weights sit two levels down) and every folder is
fsynced (:func:`fsync_tree`), the old one renamed aside, the new one renamed in, the parent fsynced, the
old one removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write", "atomic_write_json", "atomic_write_parquet", "fsync_dir",
           "fsync_tree", "swap_dir", "temp_name", "remove_stale_temps"]


def temp_name(dest: Path) -> Path:
    """A unique hidden temporary path beside ``dest`` (``.name.tmp-<pid>-<random>``)."""
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(path: str | Path) -> None:
    """fsync a folder so the renames and creations in it are durable (a no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync folders
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(dest: str | Path, mode: str = "wb", **kw: Any) -> Iterator[IO]:
    """Open a temporary file for ``dest``; on a clean exit it is fsynced and renamed over ``dest``.

    On an exception the temporary file is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        with open(tmp, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)


def atomic_write(dest: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``dest`` atomically; returns ``dest``."""
    with atomic_open(dest, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return Path(dest)


def atomic_write_json(dest: str | Path, obj: Any, **kw: Any) -> Path:
    """``json.dumps(obj)`` written atomically (``indent=2``, ``sort_keys`` off unless given)."""
    kw.setdefault("indent", 2)
    return atomic_write(dest, json.dumps(obj, default=str, **kw) + "\n")


def atomic_write_parquet(dest: str | Path, table: Any, **kw: Any) -> Path:
    """A ``pyarrow.Table`` (or a pandas DataFrame, converted without its index) written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_open(dest, "wb") as fh:
        pq.write_table(table, fh, **kw)
    return Path(dest)


def fsync_tree(root: str | Path) -> int:
    """fsync every regular file under ``root`` (recursively, links not followed), then every folder,
    deepest first, so the files and their names survive a power cut; returns how many files."""
    root = Path(root)
    n = 0
    folders = []
    for dirpath, _dirnames, filenames in os.walk(root):
        folders.append(dirpath)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
            n += 1
    for d in reversed(folders):
        fsync_dir(d)
    return n


def swap_dir(staged: str | Path, dest: str | Path) -> Path:
    """Replace folder ``dest`` by the complete folder ``staged`` (same parent); returns ``dest``.

    Between the two renames a reader finds no ``dest`` (never a mixed one); a crash there leaves the old
    folder under ``.<name>.old-*`` beside it, which the next swap or :func:`remove_stale_temps` clears.
    """
    staged, dest = Path(staged), Path(dest)
    if staged.parent.resolve() != dest.parent.resolve():
        raise ValueError(f"{staged} must be staged beside {dest} (same folder) for an atomic rename")
    fsync_tree(staged)  # every staged file and folder is durable before it becomes visible
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(staged, dest)
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def remove_stale_temps(folder: str | Path) -> int:
    """Remove temporaries left by killed writers in ``folder`` (not recursive); returns how many.

    Call it only where no writer is active in ``folder`` (a stage start, before workers run).
    """
    folder = Path(folder)
    n = 0
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            n += 1
    return n
