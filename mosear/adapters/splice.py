"""Counterfactual face/voice pairs as a shard source: ``adapter: splice`` in a corpus.

A pair is a full-AV clip (the *face*: its video stream, copied bit for bit) and an audio-only take (the
*voice*) of the same statement from another recording. When their emotions differ the clip is a conflict
with exact per-modality cues; pairs of the same emotion (another take) are spliced-but-consistent clips.
A splice has **no true emotion**: its ``label`` is None, ``face_label`` / ``voice_label`` name the two cues,
and what it measures is which cue an answer follows. A splice enters a training mix only under a target
rule the *mining* config names (``train_mix.splice_target: face | voice``, docs/mining.md); a splice source
that asks for a label here is a config error. The shard stage plans, writes, quarantines and resumes these
clips like any other source (the mux itself: :mod:`mosear.media.splice`).

Declared in the corpus YAML (paths relative to ``root``, ``root`` relative to the corpus file)::

    - adapter: splice
      root: .
      options: {faces: ravdess, voices: ravdess_audio, pairing: ravdess, offset_s: 0.033, max_pairs: 24}

``options`` (:class:`SpliceOptions`): ``faces`` / ``voices`` folders; ``pairing`` the policy that decides
which face goes with which voice: ``ravdess`` (RAVDESS file-name codes: same actor and statement, another
recording) or ``crema_d`` (CREMA-D names ``ActorID_Sentence_Emotion_Level``: same sentence, another file,
any actor: a face of one person with the voice of another); ``offset_s`` the voice's delay; ``max_pairs``
(round-robin over faces after a seeded shuffle, so a small plan still covers every face);
``include_consistent``; ``seed``.

Keys: ``{dataset}__splice_f{face take}_v{voice take}``. Clips go to ``spliced-NNNNNN`` shards unless the
source sets ``split``. Metadata: ``speaker`` is the face's person; ``extra``: ``origin: spliced``,
``face_label``, ``voice_label``, ``face_person``, ``voice_person`` (``ravdess_05``, ``crema_d_1002``: the
adapters' speaker ids), ``face_take``, ``voice_take``, ``face_source``, ``voice_source``, ``offset_s``,
``conflict``. Files of the two folders that are not takes of the right kind are reported as skipped
(``not_a_take``); pairs beyond ``max_pairs`` are not planned (not inputs).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mosear.adapters.base import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, ClipRecord, DatasetAdapter
from mosear.adapters.crema_d import EMOTIONS as CREMA_EMOTIONS
from mosear.adapters.crema_d import SENTENCES, parse_crema_name
from mosear.adapters.ravdess import STATEMENT, parse_ravdess_name
from mosear.adapters.source import SourceConfig
from mosear.labels import canonical_label

__all__ = ["SpliceAdapter", "SpliceOptions", "Take", "SplicePair", "plan_pairs"]


class SpliceOptions(BaseModel):
    """``options`` of a ``splice`` source (validated with the shard config, before any work)."""

    model_config = ConfigDict(extra="forbid")

    faces: str = Field(".", description="folder of full-AV clips, relative to the source's root")
    voices: str = Field(description="folder of audio-only takes, relative to the source's root")
    pairing: Literal["ravdess", "crema_d"] = Field(
        "ravdess", description="which face goes with which voice: ravdess = RAVDESS file-name codes, same actor "
        "and statement, another recording; crema_d = CREMA-D names, same sentence, another file (any actor)")
    offset_s: float = Field(0.033, ge=-10, le=10, description="seconds the voice is delayed against the video "
                            "(negative: cut from its start); RAVDESS audio-only takes run one frame (33 ms) ahead "
                            "of the same take inside the AV clip, measured")
    max_pairs: int | None = Field(None, ge=1, description="splice at most this many pairs (round-robin over faces, seeded)")
    include_consistent: bool = Field(True, description="also pair faces with another take of the same emotion")
    label: Any = Field(None, description="not allowed: a splice has no true label (see the module docstring)")
    seed: int = 0

    @field_validator("label")
    @classmethod
    def _no_label(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError(
                f"label: {v!r}: a spliced clip has no true emotion (its face_label and voice_label name the cues); "
                "to train on splices name a target rule in the mine config (train_mix.splice_target: face | voice)")
        return v


@dataclass(frozen=True)
class Take:
    path: Path
    take: str  # RAVDESS "EE-II-SS-RR-AA" (emotion, intensity, statement, repetition, actor); CREMA-D the stem
    label: str
    statement: str
    actor: str
    dataset: str = "ravdess"

    @property
    def person(self) -> str:
        """The person's id as the dataset's adapter writes ``speaker`` (``ravdess_05``, ``crema_d_1001``)."""
        return f"{self.dataset}_{self.actor}"


@dataclass(frozen=True)
class SplicePair:
    face: Take
    voice: Take

    @property
    def clip_id(self) -> str:
        return f"splice_f{self.face.take}_v{self.voice.take}"

    @property
    def key(self) -> str:
        return f"{self.face.dataset}__{self.clip_id}"

    @property
    def conflict(self) -> bool:
        return self.face.label != self.voice.label


def _crema_take(p: Path) -> Take | None:
    codes = parse_crema_name(p.stem)
    if codes is None:
        return None
    label = canonical_label(CREMA_EMOTIONS[codes["emotion_code"]]) or CREMA_EMOTIONS[codes["emotion_code"]]
    return Take(p, p.stem, label, codes["sentence"], codes["actor"], "crema_d")


def _takes(folder: Path, modality: str, exts: tuple[str, ...], skipped: list[dict[str, str]] | None = None,
           root: Path | None = None, pairing: str = "ravdess") -> list[Take]:
    """Speech takes of ``modality`` (``full-AV`` faces / ``audio-only`` voices) under ``folder`` (recursive:
    RAVDESS has one folder per actor; sorted): RAVDESS names, or CREMA-D names (video files are faces, audio
    files voices) with ``pairing: crema_d``. Other files go to ``skipped``."""
    out = []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_dir():
            continue
        if pairing == "crema_d":
            take = _crema_take(p) if p.suffix.lower() in exts else None
            if take is not None:
                out.append(take)
            elif skipped is not None:
                rel = p.relative_to(root).as_posix() if root is not None and p.is_relative_to(root) else str(p)
                skipped.append({"path": str(p), "source": rel,
                                "reason": "hidden" if p.name.startswith(".") else "not_a_take"})
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
                 if (v.actor == f.actor or f.dataset == "crema_d") and v.statement == f.statement
                 and v.take != f.take and (include_consistent or v.label != f.label)]
        random.Random(f"{seed}:{f.take}").shuffle(pairs)
        per_face.append(pairs)
    ordered: list[SplicePair] = []
    while any(per_face):
        for pairs in per_face:
            if pairs:
                ordered.append(pairs.pop())
    return ordered


def plan_pairs(faces: str | Path, voices: str | Path, include_consistent: bool = True,
               max_pairs: int | None = None, seed: int = 0, pairing: str = "ravdess") -> list[SplicePair]:
    """Every (face clip, voice take) of the same statement from different recordings (RAVDESS: of the
    same actor; CREMA-D: of any actor).

    With ``max_pairs``, pairs are taken round-robin over face clips after a seeded shuffle, so a small
    plan still covers every face and many emotion combinations. The order is deterministic.
    """
    face_takes = _takes(Path(faces), "full-AV", VIDEO_EXTENSIONS, pairing=pairing)
    voice_takes = _takes(Path(voices), "audio-only", AUDIO_EXTENSIONS, pairing=pairing)
    ordered = _order(face_takes, voice_takes, include_consistent, seed)
    return ordered[:max_pairs] if max_pairs else ordered


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
        names = {"ravdess": ("RAVDESS full-AV speech clips (01-01-...)", "RAVDESS audio-only speech takes (03-01-...)"),
                 "crema_d": ("CREMA-D video clips (ActorID_Sentence_Emotion_Level)",
                             "CREMA-D audio files (ActorID_Sentence_Emotion_Level)")}[opts.pairing]
        if not _takes(faces, "full-AV", VIDEO_EXTENSIONS, pairing=opts.pairing):
            raise ValueError(f"no {names[0]} in {faces}")
        if not _takes(voices, "audio-only", AUDIO_EXTENSIONS, pairing=opts.pairing):
            raise ValueError(f"no {names[1]} in {voices}")

    def input_paths(self, root: Path, source: SourceConfig) -> list[Path]:
        _, faces, voices = self._folders(root, source)
        return [faces, voices]

    def clips(self, root: Path, source: SourceConfig) -> Iterator[ClipRecord]:
        opts, faces, voices = self._folders(root, source)
        face_takes = _takes(faces, "full-AV", VIDEO_EXTENSIONS, self.skipped, root, opts.pairing)
        voice_takes = _takes(voices, "audio-only", AUDIO_EXTENSIONS, self.skipped, root, opts.pairing)
        pairs = _order(face_takes, voice_takes, opts.include_consistent, opts.seed)
        split = source.split if "split" in source.model_fields_set else "spliced"
        for pair in pairs[: opts.max_pairs] if opts.max_pairs else pairs:
            f, v = pair.face, pair.voice
            text = SENTENCES[f.statement] if f.dataset == "crema_d" else STATEMENT[f.statement]
            yield ClipRecord(
                dataset=source.dataset or f.dataset, clip_id=pair.clip_id, path=str(f.path), voice=str(v.path),
                source=f"{_rel(f.path, root)} + {_rel(v.path, root)}", split=split,
                label=None, orig_label=None,  # no true emotion: the cues are face_label / voice_label
                speaker=f.person, transcript=text,
                extra={"origin": "spliced", "face_label": f.label, "voice_label": v.label,
                       "face_person": f.person, "voice_person": v.person,
                       "face_take": f"{f.dataset}:{f.take}", "voice_take": f"{v.dataset}:{v.take}",
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
