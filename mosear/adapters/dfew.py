"""DFEW: clips ``{root}/**/NNNNN.mp4`` and the 5-fold split files of its release.

``source.manifest``: the split folder (``EmoLabel_DataSplit``) holding ``train(single-labeled)/set_K.csv``
and ``test(single-labeled)/set_K.csv`` (columns ``video_name,label``; label 1..7 in :data:`DFEW_CLASSES`
order = happy, sad, neutral, angry, surprise, disgust, fear, or the class name). ``options.fold``: K in
1..5 (default 1). Video names are numbers, unpadded in the split files; the clip is the file named as
listed, zero-padded to 5 digits, or unpadded (``1`` finds ``1.mp4``, ``00001.mp4`` or ``1.avi``, in that
order), and its key is always padded (``dfew__00001``, as the benchmark reader builds it); a video
extension on a name is dropped (:func:`~mosear.adapters._split_files.clip_stem`). A row whose clip is
not under the root is quarantined as ``missing`` at plan time (naming where it was looked for); videos
no row of the fold names are reported as skipped (``unlabelled``).
The split files are read as :mod:`mosear.evaluate.benchmark_files` reads them (one reader: ``_split_files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mosear.adapters._split_files import class_name, clip_stem, read_split_rows
from mosear.adapters.base import ClipIndex, ClipRecord, DatasetAdapter

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
        index = ClipIndex(self, root, source, exclude=(source.manifest_path(),))
        fold = self._fold(source)
        for split in ("train", "test"):
            f = split_file(source.manifest_path(), split, fold)
            for n, name, label in read_split_rows(f):
                stem = clip_stem(name, source.extensions)
                names = [stem, stem.zfill(5), str(int(stem))] if stem.isdigit() else [stem]
                orig = class_name(label, DFEW_CLASSES)
                rec = index.clip(names, names[1] if stem.isdigit() else stem, split=split, orig_label=orig,
                                 extra={"fold": fold, "label_code": label})
                if orig is None:
                    rec.error = ("bad_label", f"{f} line {n} field 'label': {label!r} is not 1..7 or a DFEW class")
                yield rec
        index.finish()
