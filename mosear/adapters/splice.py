"""Counterfactual face/voice pairs as a shard source: ``adapter: splice`` in a corpus.

A pair is a full-AV clip (the *face*: its video stream, copied bit for bit) and an audio-only take (the
*voice*) of the same speaker and statement from another recording. When their emotions differ the clip
is a conflict with exact per-modality truth; pairs of the same emotion (another take) are spliced-but-
consistent clips, which give the consistent subset an exact truth too. The shard stage plans, writes,
quarantines and resumes these clips like any other source (the mux itself: :mod:`mosear.media.splice`).

Declared in the corpus YAML (paths relative to ``root``, ``root`` relative to the corpus file)::

    - adapter: splice
      root: .
      options: {faces: ravdess, voices: ravdess_audio, pairing: ravdess, offset_s: 0.033, max_pairs: 24}

``options`` (:class:`SpliceOptions`): ``faces`` / ``voices`` folders; ``pairing`` the policy that
decides which face goes with which voice (``ravdess``: RAVDESS file-name codes, same actor and statement,
another recording); ``offset_s`` the voice's delay; ``max_pairs`` (round-robin over faces after a seeded
shuffle, so a small plan still covers every face); ``include_consistent``; ``label`` (the clip's true
label: the face's, the voice's, or ``alternate`` by key hash); ``seed``.

Keys: ``ravdess__splice_f{face take}_v{voice take}``. Clips go to ``spliced-NNNNNN`` shards unless the
source sets ``split``. Metadata ``extra``: ``origin: spliced``, ``face_label``, ``voice_label``,
``face_take``, ``voice_take``, ``face_source``, ``voice_source``, ``offset_s``, ``conflict``. Files of the
two folders that are not takes of the right kind are reported as skipped (``not_a_take``); pairs beyond
``max_pairs`` are not planned (not inputs).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from mosear.adapters.base import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, ClipRecord, DatasetAdapter
from mosear.adapters.ravdess import STATEMENT, parse_ravdess_name
from mosear.adapters.source import SourceConfig
from mosear.labels import canonical_label

__all__ = ["SpliceAdapter", "SpliceOptions", "Take", "SplicePair", "plan_pairs", "spliced_label"]


class SpliceOptions(BaseModel):
    """``options`` of a ``splice`` source (validated with the shard config, before any work)."""

    model_config = ConfigDict(extra="forbid")

    faces: str = Field(".", description="folder of full-AV clips, relative to the source's root")
    voices: str = Field(description="folder of audio-only takes, relative to the source's root")
    pairing: Literal["ravdess"] = Field(
        "ravdess", description="which face goes with which voice: ravdess = RAVDESS file-name codes, same actor "
        "and statement, another recording")
    offset_s: float = Field(0.033, ge=-10, le=10, description="seconds the voice is delayed against the video "
                            "(negative: cut from its start); RAVDESS audio-only takes run one frame (33 ms) ahead "
                            "of the same take inside the AV clip, measured")
    max_pairs: int | None = Field(None, ge=1, description="splice at most this many pairs (round-robin over faces, seeded)")
    include_consistent: bool = Field(True, description="also pair faces with another take of the same emotion")
    label: Literal["alternate", "face", "voice"] = Field(
        "alternate", description="the clip's true label: the face's, the voice's, or alternating by key hash")
    seed: int = 0


@dataclass(frozen=True)
class Take:
    path: Path
    take: str  # "EE-II-SS-RR-AA": emotion, intensity, statement, repetition, actor
    label: str
    statement: str
    actor: str


@dataclass(frozen=True)
class SplicePair:
    face: Take
    voice: Take

    @property
    def clip_id(self) -> str:
        return f"splice_f{self.face.take}_v{self.voice.take}"

    @property
    def key(self) -> str:
        return f"ravdess__{self.clip_id}"

    @property
    def conflict(self) -> bool:
        return self.face.label != self.voice.label


def _takes(folder: Path, modality: str, exts: tuple[str, ...], skipped: list[dict[str, str]] | None = None,
           root: Path | None = None) -> list[Take]:
    """RAVDESS speech takes of ``modality`` under ``folder`` (recursive: the release has one folder per
    actor; sorted); other files go to ``skipped``."""
    out = []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_dir():
            continue
        codes = parse_ravdess_name(p.stem) if p.suffix.lower() in exts else None
        if codes is None or codes["modality"] != modality or codes["channel"] != "speech":
            if skipped is not None:
                rel = p.relative_to(root).as_posix() if root is not None and p.is_relative_to(root) else str(p)
                skipped.append({"path": str(p), "source": rel,
                                "reason": "hidden" if p.name.startswith(".") else "not_a_take"})
            continue
        label = canonical_label(codes["emotion"]) or codes["emotion"]
        out.append(Take(p, "-".join(p.stem.split("-")[2:]), label, codes["statement"], codes["actor"]))
    return out


def _order(face_takes: list[Take], voice_takes: list[Take], include_consistent: bool, seed: int) -> list[SplicePair]:
    per_face: list[list[SplicePair]] = []
    for f in face_takes:
        pairs = [SplicePair(f, v) for v in voice_takes
                 if v.actor == f.actor and v.statement == f.statement and v.take != f.take
                 and (include_consistent or v.label != f.label)]
        random.Random(f"{seed}:{f.take}").shuffle(pairs)
        per_face.append(pairs)
    ordered: list[SplicePair] = []
    while any(per_face):
        for pairs in per_face:
            if pairs:
                ordered.append(pairs.pop())
    return ordered


def plan_pairs(faces: str | Path, voices: str | Path, include_consistent: bool = True,
               max_pairs: int | None = None, seed: int = 0) -> list[SplicePair]:
    """Every (face clip, voice take) of the same actor and statement from different recordings.

    With ``max_pairs``, pairs are taken round-robin over face clips after a seeded shuffle, so a small
    plan still covers every face and many emotion combinations. The order is deterministic.
    """
    face_takes = _takes(Path(faces), "full-AV", VIDEO_EXTENSIONS)
    voice_takes = _takes(Path(voices), "audio-only", AUDIO_EXTENSIONS)
    ordered = _order(face_takes, voice_takes, include_consistent, seed)
    return ordered[:max_pairs] if max_pairs else ordered


def spliced_label(pair: SplicePair, rule: str, seed: int = 0) -> str:
    """The clip's true label: the face's, the voice's, or (``alternate``) one of them by key hash."""
    if rule == "face" or not pair.conflict:
        return pair.face.label
    if rule == "voice":
        return pair.voice.label
    h = int(hashlib.sha256(f"{seed}:{pair.key}".encode()).hexdigest(), 16)
    return pair.face.label if h % 2 == 0 else pair.voice.label


class SpliceAdapter(DatasetAdapter):
    """Plans the pairs of a ``splice`` source; the shard worker muxes and decodes each one."""

    name = "splice"
    options_model = SpliceOptions

    def _folders(self, root: Path, source: SourceConfig) -> tuple[SpliceOptions, Path, Path]:
        opts = SpliceOptions.model_validate(source.options)
        return opts, Path(_norm(root / opts.faces)), Path(_norm(root / opts.voices))

    def check(self, root: Path, source: SourceConfig) -> None:
        super().check(root, source)
        opts, faces, voices = self._folders(root, source)
        for role, folder in (("faces", faces), ("voices", voices)):
            if not folder.is_dir():
                raise ValueError(f"splice {role} folder {folder} is not a folder")
        if not _takes(faces, "full-AV", VIDEO_EXTENSIONS):
            raise ValueError(f"no RAVDESS full-AV speech clips (01-01-...) in {faces}")
        if not _takes(voices, "audio-only", AUDIO_EXTENSIONS):
            raise ValueError(f"no RAVDESS audio-only speech takes (03-01-...) in {voices}")

    def input_paths(self, root: Path, source: SourceConfig) -> list[Path]:
        _, faces, voices = self._folders(root, source)
        return [faces, voices]

    def clips(self, root: Path, source: SourceConfig) -> Iterator[ClipRecord]:
        opts, faces, voices = self._folders(root, source)
        face_takes = _takes(faces, "full-AV", VIDEO_EXTENSIONS, self.skipped, root)
        voice_takes = _takes(voices, "audio-only", AUDIO_EXTENSIONS, self.skipped, root)
        pairs = _order(face_takes, voice_takes, opts.include_consistent, opts.seed)
        split = source.split if "split" in source.model_fields_set else "spliced"
        for pair in pairs[: opts.max_pairs] if opts.max_pairs else pairs:
            f, v = pair.face, pair.voice
            yield ClipRecord(
                dataset=source.dataset or "ravdess", clip_id=pair.clip_id, path=str(f.path), voice=str(v.path),
                source=f"{_rel(f.path, root)} + {_rel(v.path, root)}", split=split,
                label=spliced_label(pair, opts.label, opts.seed), orig_label=None,
                speaker=f"ravdess_{f.actor}", transcript=STATEMENT[f.statement],
                extra={"origin": "spliced", "face_label": f.label, "voice_label": v.label,
                       "face_take": f"ravdess:{f.take}", "voice_take": f"ravdess:{v.take}",
                       "face_source": f.path.name, "voice_source": v.path.name,
                       "offset_s": opts.offset_s, "conflict": pair.conflict},
            )


def _norm(p: Path) -> str:
    import os

    return os.path.normpath(os.path.abspath(p))


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)
