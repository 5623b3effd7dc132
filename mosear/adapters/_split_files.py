"""Helpers shared by adapters whose labels live in split / label files rather than file names."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from mosear.adapters.base import VIDEO_EXTENSIONS


def index_videos(root: Path, extensions: list[str] | tuple[str, ...] = ()) -> dict[str, Path]:
    """File stem -> path of every video under ``root`` (first in sorted order wins); ``extensions``
    (the source's ``extensions``) are accepted besides :data:`VIDEO_EXTENSIONS`."""
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if (p.suffix.lower() in VIDEO_EXTENSIONS or p.suffix.lower() in extensions) and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    return out


def read_pairs(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, name, label) from a CSV with a header (``video_name,label`` or ``name,label``) or
    a whitespace-separated text file ``name label`` per line; blank lines are skipped."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            has_header = header is not None and not header[0].strip().isdigit() and "label" in ",".join(header).lower()
            rows = reader if has_header else ([header] + list(reader) if header else [])
            for n, row in enumerate(rows, 2 if has_header else 1):
                if row and row[0].strip():
                    yield n, row[0].strip(), (row[1].strip() if len(row) > 1 else "")
    else:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                parts = line.replace(",", " ").split()
                if parts:
                    yield n, parts[0], (parts[1] if len(parts) > 1 else "")
