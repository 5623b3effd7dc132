"""MER2023 / MER2024 / MER2025 / EMER (MERTools releases): a label file plus the subtitles CSV.

- ``source.manifest``: the label file, one of (:mod:`mosear.adapters._mer_files` reads them, as the
  benchmark readers do):

  - ``label-6way.npz`` (MER2023): arrays ``train_corpus`` / ``test1_corpus`` / ``test2_corpus`` /
    ``test3_corpus``, each a dict ``name -> {"emo": str, "val": float}``; read with an allow-listing
    unpickler, never ``allow_pickle`` (a crafted file cannot run code);
  - a per-split label CSV ``name,discrete,valence`` (MER2023/2024 ``train-label.csv``,
    ``test1-label.csv``, ...; MER2025 ``track1_train_disdim.csv``, ``track1_test_dis.csv``);
  - an open-vocabulary CSV ``name,openset`` (MER2024 ``check-openset.csv``, MER2025 track 2): the list
    goes to ``extra.ov_labels``, the clip has no closed-set label;
  - an EMER V1 CSV ``names,emotions,subtitles,reasons`` (English or Chinese emotion words): the
    reasoning goes to ``extra.reason``, the subtitle is the transcript.

  A CSV's split is its ``split`` column, else the one its file name says (``test1-label.csv`` ->
  ``test1``), else the source's explicit ``split:`` (a name and an explicit split that differ are an
  error); a CSV none of these gives a split is refused (never defaulted to train).
- ``options.subtitles``: ``subtitle_chieng.csv`` (columns ``name, chinese, english``); the English
  text becomes the transcript, the Chinese text goes to ``extra.transcript_zh``.
- ``options.corpora``: which npz arrays to read and their split names (default: those of
  ``{train_corpus: train, test1_corpus: test1, test2_corpus: test2, test3_corpus: test3}`` the file has;
  an array named here that the file lacks is an error).
- Videos: ``{root}/**/{name}.{mp4,avi,...}``. A label row without its video is quarantined at plan time as
  ``missing`` (the message says where the search looked); a video no row names is reported as skipped
  (``unlabelled``). Rows that cannot be read (an unknown emotion word, a list literal that does not
  parse) are quarantined as ``bad_label`` / ``bad_manifest_row`` naming the file, line and field.
"""

from __future__ import annotations

import csv
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterator

from mosear.adapters._mer_files import LabelFileError, csv_kind, emotion_word, read_mer_csv, read_npz_safely, \
    split_from_filename
from mosear.adapters.base import ClipIndex, ClipRecord, DatasetAdapter

__all__ = ["Mer2023Adapter", "DEFAULT_CORPORA", "iter_labels", "load_subtitles"]

DEFAULT_CORPORA = {"train_corpus": "train", "test1_corpus": "test1", "test2_corpus": "test2", "test3_corpus": "test3"}


def load_subtitles(path: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            name = (row.get("name") or "").strip()
            if name:
                out[name] = {lang: (row.get(lang) or "").strip() for lang in ("english", "chinese")}
    return out


def _read_npz(path: Path) -> dict[str, object]:
    try:
        return read_npz_safely(path)
    except (zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as exc:
        raise LabelFileError(f"{path}: not a MERTools label .npz: {exc}") from None


def _corpora(path: Path, options: dict[str, Any], data: dict[str, object]) -> dict[str, str]:
    """The npz arrays to read -> split; an explicitly named array the file lacks is an error."""
    given = options.get("corpora")
    if given is None:
        found = {k: v for k, v in DEFAULT_CORPORA.items() if k in data}
        if not found:
            raise LabelFileError(f"{path}: none of the arrays {list(DEFAULT_CORPORA)} (has {sorted(data)}); "
                                 "name yours in options.corpora")
        return found
    missing = [k for k in given if k not in data]
    if missing:
        raise LabelFileError(f"{path}: options.corpora names {missing}, which the file lacks (has {sorted(data)})")
    return dict(given)


def csv_split(path: Path, source) -> str | None:
    """The split of a label CSV's rows without a split column: the one its file name says, or the
    source's explicit ``split:`` (None: neither). Both, differing, is an error: ``test1-label.csv`` read
    as ``train`` is the mistake this guards against."""
    named = split_from_filename(path)
    explicit = source.split if "split" in source.model_fields_set else None
    if named and explicit and named != explicit:
        raise LabelFileError(f"{path}: its name says split {named!r}, the source says `split: {explicit}`; "
                             "drop the source's `split:` or point it at the right file")
    return named or explicit


def iter_labels(path: Path, corpora: dict[str, str] | None = None, source=None) -> Iterator[dict[str, Any]]:
    """One dict per label row: ``name, split, emotion, label, valence, openset, reason, subtitle, where,
    error`` (``error``: ``(reason, message)`` or None). Raises :class:`LabelFileError` for a file that is
    not a MER label file (unknown column set, no split, npz arrays missing)."""
    if path.suffix.lower() == ".npz":
        data = _read_npz(path)
        for key, split in _corpora(path, {"corpora": corpora} if corpora else {}, data).items():
            table = data[key]
            if not isinstance(table, dict):
                raise LabelFileError(f"{path}: {key} is a {type(table).__name__}, expected name -> {{'emo', 'val'}}")
            for name in sorted(table):
                item = table[name] if isinstance(table[name], dict) else {}
                val, emo = item.get("val"), item.get("emo")
                row = {"name": str(name), "split": split, "emotion": emo, "label": emotion_word(emo),
                       "valence": None if val is None or val == -10 else float(val), "openset": (),
                       "reason": None, "subtitle": None, "where": f"{path} {key}[{name!r}]", "error": None}
                if emo is not None and row["label"] is None:
                    row["error"] = ("bad_label", f"{row['where']} field 'emo': unknown emotion word {emo!r}")
                yield row
        return
    kind, rows = read_mer_csv(path)
    fallback = csv_split(path, source) if source is not None else split_from_filename(path)
    if fallback is None and any(r.split is None for r in rows):
        raise LabelFileError(f"{path}: which split? it has no split column, its name is not a per-split file's "
                             "(train-label.csv, test1-label.csv, track1_train_*.csv, ...) and the source sets no "
                             "`split:`; set `split:` on the source")
    for r in rows:
        error = None
        if r.error:
            error = ("bad_label" if "emotion word" in r.error else "bad_manifest_row", r.error)
        yield {"name": r.name, "split": r.split or fallback, "emotion": r.emotion, "label": r.label,
               "valence": r.valence, "openset": r.openset, "reason": r.reason, "subtitle": r.subtitle,
               "where": f"{path} line {r.line}", "error": error, "kind": kind}


class Mer2023Adapter(DatasetAdapter):
    name = "mer2023"  # labels: _mer_files.emotion_word (MER's six map one to one; EMER's Chinese words by table)

    def check(self, root: Path, source) -> None:
        super().check(root, source)
        if source.manifest is None or not source.manifest_path().is_file():
            raise ValueError("MER2023 needs `manifest`: the label file (.npz or .csv)")
        path = source.manifest_path()
        subs = source.options.get("subtitles")
        if subs is not None and not source.resolve(subs).is_file():
            raise ValueError(f"subtitles file {subs} does not exist")
        if path.suffix.lower() == ".npz":
            _corpora(path, source.options, _read_npz(path))
        else:
            csv_kind(path)  # the column set
            next(iter_labels(path, source=source), None)  # the split

    def input_paths(self, root: Path, source) -> list[Path]:
        subs = source.options.get("subtitles")
        return super().input_paths(root, source) + ([source.resolve(subs)] if subs else [])

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        index = ClipIndex(self, root, source, exclude=tuple(self.input_paths(root, source)[1:]))
        subs_opt = source.options.get("subtitles")
        subs = load_subtitles(source.resolve(subs_opt)) if subs_opt else {}
        for row in iter_labels(source.manifest_path(), source.options.get("corpora"), source):
            name = row["name"] or "row"
            sub = subs.get(name, {})
            extra: dict[str, Any] = {"valence": row["valence"]}
            if sub.get("chinese"):
                extra["transcript_zh"] = sub["chinese"]
            if row["openset"]:
                extra["ov_labels"] = list(row["openset"])
            if row["reason"]:
                extra["reason"] = row["reason"]
            rec = index.clip([name], name, split=row["split"], orig_label=row["emotion"], label=row["label"],
                             transcript=sub.get("english") or row["subtitle"] or None, extra=extra)
            if row["error"] is not None:
                rec.error = row["error"]
            yield rec
        index.finish()
