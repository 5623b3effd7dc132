"""Split / label files of the fold-based datasets (DFEW, MAFW), read one way for both the shard adapters
and the benchmark readers (:mod:`mosear.evaluate.benchmark_files`), so a benchmark row's key is always the
key ``mosear shard`` gave the same clip.

- :func:`read_split_rows`: ``(line number, name, label)`` per row of a CSV (``video_name,label``) or a
  whitespace / comma separated text file (``name label``); a header row is recognised and skipped.
- :func:`clip_stem`: the name without its file extension, stripping only a *video* extension
  (``00025.mp4`` -> ``00025``, ``a.b.mp4`` -> ``a.b`` as ``Path.stem`` gives for the file itself, and a
  name listed without extension keeps its dots: ``take.1`` -> ``take.1``).
- :func:`class_name`: a label given as a 1-based class number or a class name, in a dataset's class table.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Iterator

from mosear.adapters.base import VIDEO_EXTENSIONS

__all__ = ["read_split_rows", "clip_stem", "class_name"]

_HEADER_NAMES = ("video_name", "name", "video", "clip", "clip_name", "file", "filename")


def clip_stem(name: str, extensions: Iterable[str] = ()) -> str:
    """``name`` without its extension when that is a video extension (or one of ``extensions``)."""
    name = str(name).strip()
    suffix = Path(name).suffix.lower()
    if suffix and (suffix in VIDEO_EXTENSIONS or suffix in tuple(extensions)):
        return name[: -len(suffix)]
    return name


def read_split_rows(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(line number, name, label)`` of every non-blank row (label ``""`` when the row has none).

    A row is split on commas when it has one (CSV quoting honoured), else on whitespace. The first row
    is a header, and skipped, when its first field is a column name (``video_name``, ``name``, ...) or a
    field reads ``label``.
    """
    first = True
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in (next(csv.reader([line])) if "," in line else line.split())]
            if first:
                first = False
                if parts[0].lower() in _HEADER_NAMES or any(p.lower() == "label" for p in parts[1:]):
                    continue
            yield lineno, parts[0], (parts[1] if len(parts) > 1 else "")


def class_name(raw: str, classes: tuple[str, ...]) -> str | None:
    """The class ``raw`` names: a number 1..len(classes) in the table's order, or a class name (any case);
    None when it is neither."""
    raw = str(raw).strip()
    if raw.isdigit():
        i = int(raw)
        return classes[i - 1] if 1 <= i <= len(classes) else None
    return raw.lower() if raw.lower() in classes else None
