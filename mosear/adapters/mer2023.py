"""MER2023 (MERTools release): the ``.npz`` label file plus the subtitles CSV.

- ``source.manifest``: the label file. ``.npz`` whose arrays ``train_corpus`` / ``test1_corpus`` /
  ``test2_corpus`` / ``test3_corpus`` each hold a dict ``name -> {"emo": str, "val": float}`` (numpy
  object arrays: loading needs ``allow_pickle``, so only point it at the label file you downloaded from
  the dataset's release), or a ``.csv`` with columns ``name, discrete|emo, valence|val`` (MER2024 style).
- ``options.subtitles``: ``subtitle_chieng.csv`` (columns ``name, chinese, english``); the English
  text becomes the transcript, the Chinese text goes to ``extra.transcript_zh``.
- ``options.corpora``: which npz arrays to read and their split names
  (default ``{train_corpus: train, test1_corpus: test1, test2_corpus: test2, test3_corpus: test3}``).
- Videos: ``{root}/**/{name}.{mp4,avi,...}``; a labelled name without a video is quarantined as missing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np

from mosear.adapters._split_files import index_videos
from mosear.adapters.base import ClipRecord, DatasetAdapter

DEFAULT_CORPORA = {"train_corpus": "train", "test1_corpus": "test1", "test2_corpus": "test2", "test3_corpus": "test3"}


def load_subtitles(path: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            name = (row.get("name") or "").strip()
            if name:
                out[name] = {lang: (row.get(lang) or "").strip() for lang in ("english", "chinese")}
    return out


def iter_labels(path: Path, corpora: dict[str, str]) -> Iterator[tuple[str, str, str | None, float | None]]:
    """(split, name, emotion, valence) from an npz or csv label file."""
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=True) as npz:  # the release stores dicts (object arrays)
            for key, split in corpora.items():
                if key not in npz.files:
                    continue
                table = npz[key].tolist()
                for name in sorted(table):
                    item = table[name] or {}
                    val = item.get("val")
                    yield split, str(name), item.get("emo"), None if val is None or val == -10 else float(val)
    else:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                name = (row.get("name") or "").strip()
                emo = row.get("discrete") or row.get("emo")
                val = row.get("valence") or row.get("val")
                yield row.get("split") or "train", name, emo, float(val) if val not in (None, "") else None


class Mer2023Adapter(DatasetAdapter):
    name = "mer2023"
    label_map = {"neutral": "neutral", "angry": "angry", "happy": "happy", "sad": "sad", "worried": "worried",
                 "surprise": "surprise"}

    def check(self, root: Path, source) -> None:
        super().check(root, source)
        if source.manifest is None or not source.manifest_path().is_file():
            raise ValueError("MER2023 needs `manifest`: the label file (.npz or .csv)")
        subs = source.options.get("subtitles")
        if subs is not None and not source.resolve(subs).is_file():
            raise ValueError(f"subtitles file {subs} does not exist")

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        videos = index_videos(root, source.extensions)
        subs_opt = source.options.get("subtitles")
        subs = load_subtitles(source.resolve(subs_opt)) if subs_opt else {}
        corpora = source.options.get("corpora", DEFAULT_CORPORA)
        for split, name, emo, val in iter_labels(source.manifest_path(), corpora):
            path = videos.get(name, root / f"{name}.mp4")
            sub = subs.get(name, {})
            extra = {"valence": val}
            if sub.get("chinese"):
                extra["transcript_zh"] = sub["chinese"]
            yield self.record(root, path, source, clip_id=name, split=split, orig_label=emo,
                              transcript=sub.get("english") or None, extra=extra)
