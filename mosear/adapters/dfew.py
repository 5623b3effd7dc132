"""DFEW: clips ``{root}/**/NNNNN.mp4`` and the 5-fold split files of its release.

``source.manifest``: the split folder (``EmoLabel_DataSplit``) holding ``train(single-labeled)/set_K.csv``
and ``test(single-labeled)/set_K.csv`` (columns ``video_name,label``; label 1..7 in :data:`DFEW_CLASSES`
order = happy, sad, neutral, angry, surprise, disgust, fear, or the class name). ``options.fold``: K in
1..5 (default 1). Video names are numbers, zero-padded to 5 digits to find the file (``1`` ->
``00001.mp4``); a video extension on a name is dropped (:func:`~mosear.adapters._split_files.clip_stem`).
The split files are read as :mod:`mosear.evaluate.benchmark_files` reads them (one reader: ``_split_files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mosear.adapters._split_files import class_name, clip_stem, index_videos, read_split_rows
from mosear.adapters.base import ClipRecord, DatasetAdapter

__all__ = ["DfewAdapter", "DFEW_CLASSES", "split_file"]

# The classes of DFEW's split files, numbered 1..7 in this order.
DFEW_CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


def split_file(folder: Path, split: str, fold: int) -> Path:
    """``{folder}/{split}(single-labeled)/set_{fold}.csv`` (the release's ``EmoLabel_DataSplit`` layout)."""
    return folder / f"{split}(single-labeled)" / f"set_{fold}.csv"


class DfewAdapter(DatasetAdapter):
    name = "dfew"
    label_map = {v: v for v in DFEW_CLASSES}

    def _fold(self, source) -> int:
        fold = int(source.options.get("fold", 1))
        if fold not in range(1, 6):
            raise ValueError(f"DFEW fold must be 1..5, got {fold}")
        return fold

    def check(self, root: Path, source) -> None:
        super().check(root, source)
        if source.manifest is None:
            raise ValueError("DFEW needs `manifest`: the EmoLabel_DataSplit folder")
        fold = self._fold(source)
        for split in ("train", "test"):
            f = split_file(source.manifest_path(), split, fold)
            if not f.is_file():
                raise ValueError(f"DFEW split file {f} does not exist")

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        videos = index_videos(root, source.extensions)
        fold = self._fold(source)
        for split in ("train", "test"):
            f = split_file(source.manifest_path(), split, fold)
            for n, name, label in read_split_rows(f):
                stem = clip_stem(name, source.extensions)
                stem = stem.zfill(5) if stem.isdigit() else stem
                orig = class_name(label, DFEW_CLASSES)
                rec = self.record(root, videos.get(stem, root / f"{stem}.mp4"), source, clip_id=stem, split=split,
                                  orig_label=orig, extra={"fold": fold, "label_code": label})
                if orig is None:
                    rec.error = ("bad_label", f"{f.name} line {n}: label {label!r} is not 1..7 or a DFEW class")
                yield rec
