"""What each item of a mined benchmark is, and whose: a clip with a truth, or a splice with two cues.

A mined benchmark (``mosear mine`` output) holds three kinds of item (``conflicts.parquet`` ``origin``):

- ``natural`` clips and ``human-rated`` conflicts (CREMA-D-style per-modality votes) have a **truth**:
  they are scored for accuracy in the CA-MER subsets (consistent / video-aligned / audio-aligned);
- ``spliced`` clips (one recording's face with another's voice) have **no truth**, only two cues
  (``face_label``, ``voice_label``): they are scored for **preference** (did the answer name the face's
  emotion, the voice's, or neither; :func:`mosear.evaluate.metrics.preference`), never for accuracy.
  They come from the split's ``spliced.json`` (data contract of issue 21) and, in outputs mined before it,
  from the subset files: any item whose ``origin`` is ``spliced`` is moved to the ``spliced`` subset with
  its label removed (a key-hash coin flip between the two cues was no truth).

**People.** Every item is given the people it is made of: a natural clip its ``speaker``, a splice its
``face_person`` and ``voice_person`` (each falling back to ``speaker``). When every item has them, the
intervals resample *people* (``group`` = :func:`~mosear.evaluate.intervals.crossed_group` of face and voice
person: a natural clip's speaker enters once, a cross-actor splice's two people both); otherwise the take
groups of :func:`~mosear.evaluate.benchmark_files.source_groups` stay (recordings, not people) and the report
says so. :func:`annotate` records this in ``bench.notes``: ``resampled_by`` (``people`` | ``takes`` |
``items``), ``people`` (sorted person ids of the evaluated items), ``origins`` (counts), ``moved_splices``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from mosear.evaluate.benchmark_files import (Benchmark, BenchmarkFormatError, BenchmarkItem, read_json_entries,
                                             split_folder)
from mosear.evaluate.intervals import crossed_group

__all__ = ["annotate", "SPLICED", "SPLICED_FILE", "read_people", "TRUTH_ORIGINS"]

SPLICED = "spliced"            # the subset name of spliced items (scored for preference only)
SPLICED_FILE = "spliced.json"  # beside video_aligned.json / audio_aligned.json / consistent.json
TRUTH_ORIGINS = ("natural", "human-rated")
_PERSON_COLUMNS = ("key", "origin", "face_label", "voice_label", "face_person", "voice_person", "speaker", "split")


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    s = str(v).strip()
    return s or None


def read_people(conflicts: Path) -> dict[str, dict[str, str | None]]:
    """``key -> {origin, face_label, voice_label, face_person, voice_person, speaker, split}`` from a mined
    ``conflicts.parquet`` (columns it lacks are None); empty when the file is missing."""
    import pyarrow.parquet as pq

    if not conflicts.is_file():
        return {}
    have = set(pq.read_schema(conflicts).names)
    cols = [c for c in _PERSON_COLUMNS if c in have]
    if "key" not in cols:
        raise BenchmarkFormatError(f"{conflicts}: no 'key' column")
    t = pq.read_table(conflicts, columns=cols).to_pydict()
    out = {}
    for i, key in enumerate(t["key"]):
        out[str(key)] = {c: _text(t[c][i]) if c in t else None for c in _PERSON_COLUMNS if c != "key"}
    return out


def _read_spliced(path: Path, rows: dict[str, dict[str, str | None]]) -> list[BenchmarkItem]:
    """Items of a split's ``spliced.json`` (an object keyed by sample, or a list with ``key``/``name``);
    each needs its two cues, from the entry (``face_label``/``voice_label``) or ``conflicts.parquet``."""
    from mosear.labels import canonical_label

    entries = [(k, v if isinstance(v, dict) else {}) for k, v in read_json_entries(path)]
    items = []
    for key, v in entries:
        meta = rows.get(key, {})
        face = _text(v.get("face_label")) or meta.get("face_label")
        voice = _text(v.get("voice_label")) or meta.get("voice_label")
        if not face or not voice:
            raise BenchmarkFormatError(f"{path}: row {key!r}: a splice needs face_label and voice_label (its two cues; "
                                       "in the entry or in conflicts.parquet)")
        items.append(BenchmarkItem(key, None, SPLICED, None, split=_text(v.get("split")) or meta.get("split"),
                                   origin=SPLICED, face_label=canonical_label(face) or face.lower(),
                                   voice_label=canonical_label(voice) or voice.lower()))
    return items


def _people(meta: dict[str, str | None]) -> tuple[str | None, str | None]:
    face = meta.get("face_person") or meta.get("speaker")
    voice = meta.get("voice_person") or meta.get("speaker")
    return face, voice


def annotate(bench: Benchmark) -> Benchmark:
    """Give a mined benchmark's items their origin, cues and people (module docstring); other formats are
    returned as they are (``notes.resampled_by`` = ``items``). Adds ``conflicts.parquet`` and
    ``spliced.json`` to ``bench.files`` (their bytes decide the unit's scores)."""
    from mosear.labels import canonical_label

    if bench.spec.format != "mined":
        bench.notes.setdefault("resampled_by", "items")
        return bench
    conflicts = Path(bench.spec.path) / "conflicts.parquet"
    rows = read_people(conflicts)
    items: list[BenchmarkItem] = []
    moved = 0
    for it in bench.items:
        meta = rows.get(it.key, {})
        origin = meta.get("origin") or it.origin
        if origin == SPLICED:  # no truth: preference only
            moved += it.subset != SPLICED
            face, voice = meta.get("face_label"), meta.get("voice_label")
            it = dataclasses.replace(it, subset=SPLICED, label=None, reference=None, ov_labels=(), origin=SPLICED,
                                     face_label=canonical_label(face) or face if face else None,
                                     voice_label=canonical_label(voice) or voice if voice else None)
        else:  # a truth; its cues kept for the record (a truth-rule check reads them)
            face, voice = meta.get("face_label"), meta.get("voice_label")
            it = dataclasses.replace(it, origin=origin, face_label=canonical_label(face) or face if face else None,
                                     voice_label=canonical_label(voice) or voice if voice else None)
        items.append(it)
    spliced_file = split_folder(bench.spec) / SPLICED_FILE
    if spliced_file.is_file():
        have = {it.key for it in items}
        items += [it for it in _read_spliced(spliced_file, rows) if it.key not in have][: bench.spec.limit or None]
        bench.files.append(spliced_file)
    if conflicts.is_file():
        bench.files.append(conflicts)
    people = {it.key: _people(rows.get(it.key, {})) for it in items}
    if items and all(f and v for f, v in people.values()):
        items = [dataclasses.replace(it, group=crossed_group(f"person:{people[it.key][0]}", f"person:{people[it.key][1]}"))
                 for it in items]
        how = "people"
    else:
        how = "takes" if any(it.group for it in items) else "items"
    bench.items = items
    bench.notes.update({
        "resampled_by": how,
        "people": sorted({p for pair in people.values() for p in pair if p}),
        "origins": dict(Counter(it.origin or "unknown" for it in items)),
        "subsets": dict(Counter(it.subset or "none" for it in items)),
        "moved_splices": moved,
    })
    return bench
