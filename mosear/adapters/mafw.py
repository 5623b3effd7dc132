"""MAFW: clips ``{root}/**/NNNNN.mp4`` and the single-expression 5-fold split files.

``source.manifest``: the folder holding ``set_K/train.txt`` and ``set_K/test.txt`` (e.g. the release's
``Train & Test Set/single/no_caption``); each line ``clip_name label`` (comma or whitespace separated),
the label being a MAFW class name or its 1-based index in :data:`MAFW_CLASSES` order. A video extension
on a name is dropped, nothing else (``00025.mp4`` -> ``00025``). ``options.fold``: K in 1..5 (default 1).
A row whose clip is not under the root (``{root}/**/{name}.<video ext>``) is quarantined as ``missing`` at
plan time, naming where it was looked for; videos no row of the fold names are reported as skipped.
The split files are read as :mod:`mosear.evaluate.benchmark_files` reads them (one reader: ``_split_files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mosear.adapters._split_files import class_name, clip_stem, read_split_rows
from mosear.adapters.base import ClipIndex, ClipRecord, DatasetAdapter

__all__ = ["MafwAdapter", "MAFW_CLASSES"]

# MAFW's eleven single-expression classes, numbered 1..11 in this order.
MAFW_CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "anxiety",
                "helplessness", "disappointment")


class MafwAdapter(DatasetAdapter):
    name = "mafw"
    # helplessness and disappointment have no canonical class: label null, original kept
    label_map = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happiness": "happy", "neutral": "neutral",
                 "sadness": "sad", "surprise": "surprise", "contempt": "contempt", "anxiety": "worried",
                 "helplessness": None, "disappointment": None}

    def _files(self, source) -> list[tuple[str, Path]]:
        fold = int(source.options.get("fold", 1))
        if fold not in range(1, 6):
            raise ValueError(f"MAFW fold must be 1..5, got {fold}")
        base = source.manifest_path() / f"set_{fold}"
        return [(split, base / f"{split}.txt") for split in ("train", "test")]

    def check(self, root: Path, source) -> None:
        super().check(root, source)
        if source.manifest is None:
            raise ValueError("MAFW needs `manifest`: the folder with set_K/{train,test}.txt")
        for _, f in self._files(source):
            if not f.is_file():
                raise ValueError(f"MAFW split file {f} does not exist")

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        index = ClipIndex(self, root, source, exclude=(source.manifest_path(),))
        for split, f in self._files(source):
            for n, name, label in read_split_rows(f):
                stem = clip_stem(name, source.extensions)
                orig = class_name(label, MAFW_CLASSES)
                rec = index.clip([stem], stem, split=split, orig_label=orig if orig is not None else label.lower(),
                                 extra={"fold": int(source.options.get("fold", 1))})
                if orig is None:
                    rec.error = ("bad_label", f"{f} line {n} field 'label': {label!r} is not a MAFW class")
                yield rec
        index.finish()
