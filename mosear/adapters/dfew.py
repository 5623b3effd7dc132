"""DFEW: clips ``{root}/**/NNNNN.mp4`` and the 5-fold split files of its release.

``source.manifest``: the split folder (``EmoLabel_DataSplit``) holding ``train(single-labeled)/set_K.csv``
and ``test(single-labeled)/set_K.csv`` (columns ``video_name,label``; label 1..7 =
happy, sad, neutral, angry, surprise, disgust, fear). ``options.fold``: K in 1..5 (default 1).
Video names are numbers, zero-padded to 5 digits to find the file (``1`` -> ``00001.mp4``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mosear.adapters._split_files import index_videos, read_pairs
from mosear.adapters.base import ClipRecord, DatasetAdapter

DFEW_LABELS = {"1": "happy", "2": "sad", "3": "neutral", "4": "angry", "5": "surprise", "6": "disgust", "7": "fear"}


def _split_file(folder: Path, split: str, fold: int) -> Path:
    return folder / f"{split}(single-labeled)" / f"set_{fold}.csv"


class DfewAdapter(DatasetAdapter):
    name = "dfew"
    label_map = {v: v for v in DFEW_LABELS.values()}

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
            f = _split_file(source.manifest_path(), split, fold)
            if not f.is_file():
                raise ValueError(f"DFEW split file {f} does not exist")

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        videos = index_videos(root, source.extensions)
        fold = self._fold(source)
        for split in ("train", "test"):
            f = _split_file(source.manifest_path(), split, fold)
            for n, name, label in read_pairs(f):
                stem = name.split(".")[0]
                stem = stem.zfill(5) if stem.isdigit() else stem
                orig = DFEW_LABELS.get(label)
                rec = self.record(root, videos.get(stem, root / f"{stem}.mp4"), source, clip_id=stem, split=split,
                                  orig_label=orig, extra={"fold": fold, "label_code": label})
                if orig is None:
                    rec.error = ("bad_label", f"{f.name} line {n}: label {label!r} is not 1..7")
                yield rec
