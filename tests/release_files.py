"""Fixture corpora in a dataset's release layout: real sample clips under the dataset's own file names,
and label CSVs written as the release writes them (the datasets' own files are never committed)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path


def copy_clips(samples_dir: Path, root: Path, names: list[str]) -> None:
    """Copy real clips of the sample corpus to ``root`` under ``names`` (one clip each, in order)."""
    srcs = sorted((samples_dir / "ravdess").glob("*.mp4")) + sorted((samples_dir / "crema_d_extra").glob("*.mp4"))
    root.mkdir(parents=True, exist_ok=True)
    for name, src in zip(names, srcs):
        shutil.copy(src, root / name)


def write_csv(path: Path, header: list[str], rows: list) -> Path:
    """A UTF-8 CSV with ``header`` and ``rows``, as the release files are; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path
