"""RAVDESS: labels from the file-name codes ``MM-CC-EE-II-SS-RR-AA`` (see datasets/ravdess/card.md).

Only video files are clips (modality 01 full-AV, 02 video-only); audio-only ``03-`` takes are not shard
inputs. ``source.options``: ``test_actors`` / ``val_actors`` (lists of actor numbers) choose the split
per actor; every other actor gets ``source.split``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from mosear.adapters.base import ClipRecord, DatasetAdapter

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
MODALITY = {"01": "full-AV", "02": "video-only", "03": "audio-only"}
CHANNEL = {"01": "speech", "02": "song"}
EMOTION = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
           "07": "disgust", "08": "surprised"}
INTENSITY = {"01": "normal", "02": "strong"}
STATEMENT = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def parse_ravdess_name(stem: str) -> dict[str, str] | None:
    """The codes of a RAVDESS file stem, or None when the stem is not a RAVDESS name."""
    m = _NAME.match(stem)
    if not m:
        return None
    mod, ch, emo, inten, stmt, rep, actor = m.groups()
    known = (mod in MODALITY, ch in CHANNEL, emo in EMOTION, inten in INTENSITY, stmt in STATEMENT)
    if not all(known):
        return None
    return {"modality": MODALITY[mod], "channel": CHANNEL[ch], "emotion_code": emo, "emotion": EMOTION[emo],
            "intensity": INTENSITY[inten], "statement": stmt, "repetition": rep, "actor": actor}


class RavdessAdapter(DatasetAdapter):
    name = "ravdess"
    label_map = {"neutral": "neutral", "calm": "calm", "happy": "happy", "sad": "sad", "angry": "angry",
                 "fearful": "fear", "disgust": "disgust", "surprised": "surprise"}

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        opts = source.options
        test = {int(a) for a in opts.get("test_actors", [])}
        val = {int(a) for a in opts.get("val_actors", [])}
        for p in self.video_files(root, source):
            codes = parse_ravdess_name(p.stem)
            if codes is None:
                yield self.bad_name(root, p, source, "RAVDESS name MM-CC-EE-II-SS-RR-AA")
                continue
            actor = int(codes["actor"])
            split = "test" if actor in test else "val" if actor in val else source.split
            yield self.record(
                root, p, source, split=split, orig_label=codes["emotion"],
                speaker=f"ravdess_{codes['actor']}",
                transcript=STATEMENT[codes["statement"]] if codes["channel"] == "speech" else None,
                extra=codes,
            )
