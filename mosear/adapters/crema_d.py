"""CREMA-D: labels from the file name ``ActorID_Sentence_Emotion_Level`` and, when present, the crowd
ratings per modality from ``processedResults/summaryTable.csv`` (see datasets/crema_d/card.md).

``source.options``: ``ratings`` (path to summaryTable.csv; default: looked up as
``processedResults/summaryTable.csv`` in the root and its parent), ``test_actors`` (list of actor ids).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Iterator

from mosear.adapters.base import ClipRecord, DatasetAdapter

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold", "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment", "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before", "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
# summaryTable.csv votes use one letter per emotion; several winners are joined by ':'.
VOTE_LETTERS = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}


def parse_crema_name(stem: str) -> dict[str, str] | None:
    m = _NAME.match(stem)
    if not m or m.group(2) not in SENTENCES or m.group(3) not in EMOTIONS or m.group(4) not in LEVELS:
        return None
    actor, sent, emo, lvl = m.groups()
    return {"actor": actor, "sentence": sent, "emotion_code": emo, "level": LEVELS[lvl]}


def _votes(raw: str | None) -> list[str]:
    return [VOTE_LETTERS[v] for v in (raw or "").split(":") if v in VOTE_LETTERS]


def load_ratings(path: Path, unknown: list[str] | None = None) -> dict[str, dict]:
    """fileName -> per-modality majority votes (canonical labels; a tie lists every winner) and levels.
    Rows whose name is not a CREMA-D clip name are left out and listed in ``unknown``."""
    out: dict[str, dict] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            name = (row.get("fileName") or row.get("FileName") or "").strip()
            if not name or parse_crema_name(name) is None:
                if unknown is not None:
                    unknown.append(name or f"(empty name, row {row.get('') or '?'})")
                continue
            out[name] = {
                mod: {"votes": _votes(row.get(f"{col}Vote")), "levels": row.get(f"{col}Level")}
                for mod, col in (("audio", "Voice"), ("visual", "Face"), ("audio_visual", "MultiModal"))
            }
    return out


class CremaDAdapter(DatasetAdapter):
    name = "crema_d"
    label_map = dict(EMOTIONS)

    def _ratings_path(self, root: Path, source) -> Path | None:
        if "ratings" in source.options:
            return source.resolve(source.options["ratings"])
        for base in (root, root.parent):
            cand = base / "processedResults" / "summaryTable.csv"
            if cand.is_file():
                return cand
        return None

    def check(self, root: Path, source) -> None:
        super().check(root, source)
        p = self._ratings_path(root, source)
        if "ratings" in source.options and (p is None or not p.is_file()):
            raise ValueError(f"ratings table {p} does not exist")

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        rp = self._ratings_path(root, source)
        unknown: list[str] = []
        ratings = load_ratings(rp, unknown) if rp is not None else {}
        if unknown:
            log.warning("%s: %d row(s) name no CREMA-D clip and are left out: %s", rp, len(unknown), unknown[:5])
        test = {str(a) for a in source.options.get("test_actors", [])}
        for p in self.video_files(root, source):
            codes = parse_crema_name(p.stem)
            if codes is None:
                yield self.bad_name(root, p, source, "CREMA-D name ActorID_Sentence_Emotion_Level")
                continue
            extra: dict = dict(codes)
            if p.stem in ratings:
                extra["ratings"] = ratings[p.stem]
            elif rp is not None:
                extra["ratings_missing"] = True  # counted in the mining summary's warnings
            if unknown:
                extra["ratings_unknown_names"] = len(unknown)
            yield self.record(
                root, p, source, orig_label=codes["emotion_code"],
                split="test" if codes["actor"] in test else source.split,
                speaker=f"crema_d_{codes['actor']}", transcript=SENTENCES[codes["sentence"]], extra=extra,
            )
