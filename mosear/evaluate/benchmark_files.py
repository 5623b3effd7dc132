"""Readers for the benchmarks' released label/reference files (the data itself is the user's).

Every reader turns a benchmark into :class:`BenchmarkItem` rows (sample key, label, subset,
reference text) plus the label space its closed-set scores use. Media are not read here: the items'
keys are looked up in shard folders produced by ``mosear shard`` (``BenchmarkSpec.shards``), so a
benchmark is evaluated from the same decoded samples training saw.

Formats (FORMATS.md; where a release's layout is not public in detail, the accepted variants are
listed and anything else is an error naming the file and row):

- ``camer`` / ``mined``: a folder with ``video_aligned.json``, ``audio_aligned.json``,
  ``consistent.json`` (a mined benchmark: its split folder, ``{path}/{split}/``, ``test`` by default;
  ``split: all`` reads the top-level files of every split; a mined folder's ``ambiguous.json``, when present,
  gives subset ``ambiguous``: items with a truth that count in ``all`` only); each maps a sample name to
  ``{"reason": text, "label": str, ...}`` (a bare string is taken as the reason;
  ``reasoning``/``caption``/``smp_reason_caption`` also name the reason, ``emo``/``emotion`` the label,
  ``ov_labels``/``openset`` optional open-vocabulary labels, a
  list or a comma-separated string; mined exports also carry ``split`` and ``misleading_cue``), or is a
  list of such objects with a ``name``/``key`` field. The set metric's reference is the label plus the
  open-vocabulary labels, never the reasoning (:func:`mosear.evaluate.judges.reference_set`).
  CA-MER's keys are ``ca_mer__{name}`` (as ``mosear shard``'s ``ca_mer`` adapter writes them; set
  ``key_prefix: mer2023`` when the clips were sharded with the ``mer2023`` adapter); mined keys are
  sample keys already.
- ``mer2023``: the MERTools ``.npz`` (entry ``split``: name → ``{'emo': str, 'val': float}``), read
  with an allow-listing unpickler (no arbitrary objects); a per-split label CSV (``name,discrete,valence``:
  ``test1-label.csv``, MER2025 ``track1_test_dis.csv``; ``split`` then must agree with the file's name or
  its ``split`` column); or Emotion-LLaMA's test list ``.txt`` (``name frames label val`` per line).
  Labels outside the six classes count as neutral (the protocol Emotion-LLaMA scores with). The CSV
  and ``.npz`` are read by :mod:`mosear.adapters._mer_files`, as the ``mer2023`` shard adapter reads them.
- ``dfew``: a fold's CSV (``video_name,label``, label 1–7 = happy, sad, neutral, angry, surprise,
  disgust, fear, or the name), or the ``EmoLabel_DataSplit`` folder (``test(single-labeled)/set_{fold}.csv``);
  numeric names are zero-padded to 5 digits (``dfew__00001``), as the ``dfew`` shard adapter does.
- ``mafw``: a fold's list (``name label`` per line, whitespace or comma separated; label a name or
  1–11 in MAFW's order), or the split folder (``set_{fold}/test.txt``, or ``single/no_caption/set_{fold}/test.txt``).

Keys are built as the shard adapters (:mod:`mosear.adapters`) build them: ``{dataset}__{safe_id(name)}``
with the adapter's name as the default dataset; ``key_prefix`` overrides the dataset part.
- ``emer``: CSV or JSON rows with a name (``name``/``names``/``key``), the reference reasoning
  (``text_field`` or one of ``reason``, ``reasons``, ``eng_reasons``, ``english``, ``reasoning``,
  ``description``) and optionally a label (``emo``/``label``/``emotion``/``emotions``, English or Chinese:
  :data:`mosear.adapters._mer_files.ZH_EMOTIONS`). EMER V1's CSV (``names,emotions,subtitles,reasons``) and
  MER2024's open-vocabulary ground truth ``check-openset.csv`` (``name,openset``, ``openset`` a Python
  list literal read with :func:`ast.literal_eval`; items with open-vocabulary labels and no reasoning)
  are recognised by their columns. Rows that cannot be read (an unknown emotion word, a list literal
  that does not parse) are counted and the first named (file, line, field) in one error.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mosear.adapters._mer_files import COLUMN_SETS, LabelFileError, csv_kind, emotion_word, read_mer_csv, \
    read_npz_safely, split_from_filename
from mosear.adapters._split_files import clip_stem, read_split_rows
from mosear.adapters.dfew import DFEW_CLASSES
from mosear.adapters.mafw import MAFW_CLASSES
from mosear.evaluate.config import BenchmarkSpec
from mosear.labels import CANONICAL_LABELS, MER2023_LABELS, canonical_label

__all__ = ["BenchmarkItem", "Benchmark", "BenchmarkFormatError", "load_benchmark", "split_folder", "source_groups",
           "CAMER_SUBSETS", "AMBIGUOUS",
           "DFEW_LABELS", "MAFW_LABELS", "read_npz_safely"]

CAMER_SUBSETS = ("video_aligned", "audio_aligned", "consistent")
# A mined split's items with a truth whose cues decided no subset (``ambiguous.json``, issue 21): scored for
# accuracy (the "all with a truth" column), never in the conflict gap or conflict-mean, never calibrated on.
AMBIGUOUS = "ambiguous"
# The class tables and split-file parsing are the shard adapters' (one definition, mosear.adapters):
# DFEW numbers its classes 1..7 in DFEW_LABELS order; MAFW's eleven single labels in MAFW_RAW order,
# scored under their canonical names (those without one keep their own).
DFEW_LABELS = DFEW_CLASSES
MAFW_RAW = MAFW_CLASSES
MAFW_LABELS = tuple(canonical_label(x) or x for x in MAFW_RAW)

_REASON_FIELDS = ("reason", "reasoning", "caption", "smp_reason_caption", "description", "eng_reasons", "english",
                  "reasons")
_LABEL_FIELDS = ("label", "emo", "emotion", "emotions")
_NAME_FIELDS = ("key", "name", "names", "video", "video_name", "sample")
_OV_FIELDS = ("ov_labels", "openset", "open_vocabulary")


def _ov_labels(val: object, where: str) -> tuple[str, ...]:
    """Open-vocabulary labels of a row: a list of words, a Python list literal as MER2024's
    ``check-openset.csv`` writes it (``"['pleasurable', 'happy']"``, read with :func:`ast.literal_eval`,
    never evaluated), or one string separated by commas/semicolons."""
    raw = _first(val, _OV_FIELDS) if isinstance(val, dict) else None
    if raw is None:
        return ()
    field = next(f for f in _OV_FIELDS if isinstance(val, dict) and val.get(f) not in (None, ""))
    if isinstance(raw, str) and raw.strip().startswith(("[", "(")):
        try:
            raw = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise BenchmarkFormatError(f"{where} field {field!r}: {raw!r} is not a Python list literal of words "
                                       f"({type(exc).__name__}: {exc})") from None
        raw = list(raw) if isinstance(raw, tuple) else raw
    elif isinstance(raw, str):
        raw = raw.replace(";", ",").split(",")
    if not isinstance(raw, list) or not all(isinstance(w, str) for w in raw):
        raise BenchmarkFormatError(f"{where} field {field!r}: must be a list of words or a comma-separated string")
    return tuple(w.strip().lower() for w in raw if w.strip())


class BenchmarkFormatError(ValueError):
    """A benchmark file that cannot be read as its format; the message names the file and row."""


@dataclass(frozen=True)
class BenchmarkItem:
    key: str                      # sample key in the shards ({dataset}__{clip_id})
    label: str | None             # reference label in the benchmark's label space (None: reasoning only)
    subset: str | None = None     # CA-MER subset / None
    reference: str | None = None  # reference reasoning text (CA-MER, EMER) / None
    group: str | None = None      # resampling group: items sharing a face or voice source (None: its own)
    split: str | None = None      # mined benchmarks: train | validation | test | unassigned / None
    ov_labels: tuple[str, ...] = ()  # optional open-vocabulary labels (join the label in the reference set)
    origin: str | None = None     # mined: natural | spliced | human-rated (mosear.evaluate.items) / None
    face_label: str | None = None   # a splice's two cues (no truth: scored for preference, never accuracy)
    voice_label: str | None = None


@dataclass
class Benchmark:
    spec: BenchmarkSpec
    labels: tuple[str, ...]       # closed-set label space (what the model scores)
    items: list[BenchmarkItem]    # label files are small (≤ tens of thousands of rows): held in memory
    shard_dirs: list[str]         # where the media of the keys are
    files: list[Path]             # the files read (their content enters the cache hash)
    calibration: "Benchmark | None" = None  # the split AR is calibrated on (settings with calibrate)
    notes: dict = dataclasses.field(default_factory=dict)  # plan-time facts (mosear.evaluate.items, units.plan_units)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def has_references(self) -> bool:
        """Whether any item has a reference the set metric scores a generated answer against: a
        reasoning text or open-vocabulary labels (MER2024-OV has only the latter)."""
        return any(it.reference or it.ov_labels for it in self.items)


def _key(prefix: str | None, name: str, *, pad5: bool = False) -> str:
    """The shard key of a benchmark row, built as ``mosear shard``'s adapters build it
    (``{dataset}__{safe_id(stem)}``; DFEW's numeric names zero-padded to 5 digits)."""
    from mosear.adapters.base import safe_id

    name = clip_stem(name)  # a video extension only, as the adapters strip it
    if pad5 and name.isdigit():
        name = name.zfill(5)
    return f"{prefix}__{safe_id(name)}" if prefix else name


def _first(d: dict, fields: tuple[str, ...]):
    for f in fields:
        if f in d and d[f] not in (None, ""):
            return d[f]
    return None


def _label(raw, space: tuple[str, ...], where: str, *, outside: str | None = None) -> str | None:
    if raw is None:
        return None
    lab = emotion_word(str(raw)) or str(raw).strip().lower()
    if lab not in space:
        if outside is not None and emotion_word(str(raw)) is not None:
            return outside
        raise BenchmarkFormatError(f"{where}: label {raw!r} is not one of {list(space)}")
    return lab


# ----------------------------------------------------------------------------------- CA-MER / mined
def read_json_entries(path: Path) -> list[tuple[str, object]]:
    """``(sample name, entry)`` pairs of a CA-MER-style JSON file: an object keyed by sample, or a list of
    objects naming their sample (one of ``_NAME_FIELDS``); anything else is a :class:`BenchmarkFormatError`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkFormatError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict):
        return [(str(k), v) for k, v in data.items()]
    if not isinstance(data, list):
        raise BenchmarkFormatError(f"{path}: expected an object keyed by sample or a list, got {type(data).__name__}")
    rows = []
    for i, r in enumerate(data):
        name = _first(r, _NAME_FIELDS) if isinstance(r, dict) else None
        if name is None:
            raise BenchmarkFormatError(f"{path}: row {i}: no sample name (one of {list(_NAME_FIELDS)})")
        rows.append((str(name), r))
    return rows


def _read_subset_json(path: Path, subset: str, prefix: str | None, space: tuple[str, ...]) -> list[BenchmarkItem]:
    rows = read_json_entries(path)
    items = []
    for name, val in rows:
        where = f"{path}: row {name!r}"
        if isinstance(val, str):
            reason, label = val, None
        elif isinstance(val, dict):
            reason, label = _first(val, _REASON_FIELDS), _first(val, _LABEL_FIELDS)
        else:
            raise BenchmarkFormatError(f"{where}: expected an object or a string, got {type(val).__name__}")
        if reason is None and label is None:
            raise BenchmarkFormatError(
                f"{where}: missing fields: needs a reasoning ({'/'.join(_REASON_FIELDS[:4])}) or a label ({'/'.join(_LABEL_FIELDS)})"
            )
        split = val.get("split") if isinstance(val, dict) else None
        items.append(BenchmarkItem(_key(prefix, name), _label(label, space, where), subset,
                                   str(reason) if reason is not None else None,
                                   split=str(split) if split is not None else None,
                                   ov_labels=_ov_labels(val, where)))
    return items


def split_folder(spec: BenchmarkSpec, split: str | None = None) -> Path:
    """Where a camer/mined benchmark's subset files are for ``split`` (default: the spec's own)."""
    root = Path(spec.path)
    split = split if split is not None else (spec.split or ("test" if spec.format == "mined" else None))
    if split in (None, "all"):
        return root
    folder = root / split
    if not folder.is_dir():
        hint = (" (mined before splits existed? rerun `mosear mine`, or set split: all to read every row, "
                "rows a checkpoint trained on included)") if spec.format == "mined" else ""
        raise BenchmarkFormatError(f"{spec.name}: {root} has no {split}/ split folder{hint}")
    return folder


def source_groups(conflicts: Path) -> dict[str, str]:
    """``key -> crossed_group(face source, voice source)`` from a mined ``conflicts.parquet``
    (``face_take`` / ``voice_take``; a missing one is the key itself): the intervals resample faces and
    voices as two crossed factors (:mod:`mosear.evaluate.intervals`). Empty without those columns.

    (Until this version the keys sharing a face *or* a voice were joined into one group; on a spliced
    split that is one group for everything, and the bootstrap over it gave zero-width intervals.)
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from mosear.evaluate.intervals import crossed_group

    if not conflicts.is_file():
        return {}
    cols = [c for c in ("key", "face_take", "voice_take") if c in pq.read_schema(conflicts).names]
    if len(cols) < 2 or "key" not in cols:
        return {}
    df = pd.read_parquet(conflicts, columns=cols)

    def source(v: object, key: str) -> str:
        return v if isinstance(v, str) and v else key

    return {str(r["key"]): crossed_group(source(r.get("face_take"), str(r["key"])), source(r.get("voice_take"), str(r["key"])))
            for r in df.to_dict("records")}


def _read_camer(spec: BenchmarkSpec, mined: bool) -> tuple[list[BenchmarkItem], list[Path], tuple[str, ...]]:
    if not Path(spec.path).is_dir():
        raise BenchmarkFormatError(f"{spec.path}: expected the folder holding {', '.join(s + '.json' for s in CAMER_SUBSETS)}")
    root = split_folder(spec)
    space = CANONICAL_LABELS if mined else MER2023_LABELS
    prefix = spec.key_prefix if spec.key_prefix is not None else (None if mined else "ca_mer")
    items, files = [], []
    missing = [s for s in CAMER_SUBSETS if not (root / f"{s}.json").is_file()]
    if missing:
        raise BenchmarkFormatError(f"{root}: missing subset file(s) {[m + '.json' for m in missing]}")
    for s in CAMER_SUBSETS:
        p = root / f"{s}.json"
        files.append(p)
        items += _read_subset_json(p, s, prefix or None, space)
    if mined and (root / f"{AMBIGUOUS}.json").is_file():  # older mined folders lack it: their 3 subsets only
        p = root / f"{AMBIGUOUS}.json"
        files.append(p)
        items += _read_subset_json(p, AMBIGUOUS, prefix or None, space)
    if mined:  # the intervals resample faces and voices (crossed factors), not clips
        groups = source_groups(Path(spec.path) / "conflicts.parquet")
        if groups:
            items = [dataclasses.replace(it, group=groups.get(it.key)) for it in items]
    return items, files, space


# ------------------------------------------------------------------------------------------ MER2023
def _read_mer2023(spec: BenchmarkSpec) -> tuple[list[BenchmarkItem], list[Path]]:
    path = Path(spec.path)
    if not path.is_file():
        raise BenchmarkFormatError(f"{path}: MER2023 label file not found")
    prefix = spec.key_prefix if spec.key_prefix is not None else "mer2023"
    items = []
    if path.suffix == ".txt":  # Emotion-LLaMA test list: name frames label val
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) < 3:
                raise BenchmarkFormatError(f"{path}: line {lineno}: expected 'name frames label [val]', got {line!r}")
            items.append(BenchmarkItem(_key(prefix, parts[0]),
                                       _label(parts[2], MER2023_LABELS, f"{path}: line {lineno}", outside="neutral")))
        return items, [path]
    if path.suffix.lower() == ".csv":
        return _read_mer_csv_labels(spec, path, prefix), [path]
    try:
        data = read_npz_safely(path)
    except (zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as exc:
        raise BenchmarkFormatError(f"{path}: not a MERTools label .npz: {exc}") from None
    split = spec.split or "test1_corpus"
    if split not in data:
        raise BenchmarkFormatError(f"{path}: no entry {split!r} (has {sorted(data)})")
    corpus = data[split]
    if not isinstance(corpus, dict):
        raise BenchmarkFormatError(f"{path}: {split} is a {type(corpus).__name__}, expected name -> {{'emo', 'val'}}")
    for name, val in corpus.items():
        where = f"{path}: {split} row {name!r}"
        emo = val.get("emo") if isinstance(val, dict) else None
        if emo is None:
            raise BenchmarkFormatError(f"{where}: missing field 'emo'")
        items.append(BenchmarkItem(_key(prefix, name), _label(emo, MER2023_LABELS, where, outside="neutral")))
    return items, [path]


def _mer_rows(path: Path, want: tuple[str, ...]) -> list:
    """Rows of a MER label CSV of one of the ``want`` kinds; every row error counted, the first named."""
    try:
        kind, rows = read_mer_csv(path)
    except LabelFileError as exc:
        raise BenchmarkFormatError(str(exc)) from None
    if kind not in want:
        raise BenchmarkFormatError(f"{path}: a MER {kind} file ({','.join(c[0] for c in COLUMN_SETS[kind][0])}), "
                                   f"not what this format reads ({' or '.join(want)})")
    bad = [r for r in rows if r.error]
    if bad:
        raise BenchmarkFormatError(f"{path}: {len(bad)} of {len(rows)} rows cannot be read: "
                                   + "; ".join(r.error for r in bad[:5]) + ("; ..." if len(bad) > 5 else ""))
    return rows


def _read_mer_csv_labels(spec: BenchmarkSpec, path: Path, prefix: str) -> list[BenchmarkItem]:
    """A per-split MER label CSV (``name,discrete[,valence][,split]``) as a closed-set benchmark."""
    rows = _mer_rows(path, ("labels",))
    want = spec.split[: -len("_corpus")] if spec.split and spec.split.endswith("_corpus") else spec.split
    named = split_from_filename(path)
    has_col = any(r.split for r in rows)
    if want and has_col:
        rows = [r for r in rows if r.split == want]
        if not rows:
            raise BenchmarkFormatError(f"{path}: no rows of split {want!r} in its split column")
    elif want and named and want != named:
        raise BenchmarkFormatError(f"{path}: its name says split {named!r}, the benchmark asks for {spec.split!r}")
    return [BenchmarkItem(_key(prefix, r.name), _label(r.emotion, MER2023_LABELS, f"{path} line {r.line}",
                                                       outside="neutral")) for r in rows]


# ------------------------------------------------------------------------------------- DFEW / MAFW
def _read_fold(spec: BenchmarkSpec, space: tuple[str, ...], raw: tuple[str, ...], default_files: tuple[str, ...]) -> tuple[list[BenchmarkItem], list[Path]]:
    """A DFEW / MAFW fold's split file, parsed as the shard adapters parse it (``read_split_rows``)."""
    path = Path(spec.path)
    if path.is_dir():
        cands = [path / f.format(fold=spec.fold) for f in default_files]
        path = next((c for c in cands if c.is_file()), cands[0])
    if not path.is_file():
        raise BenchmarkFormatError(f"{path}: {spec.format} split file not found")
    prefix = spec.key_prefix if spec.key_prefix is not None else spec.format
    items = []
    for lineno, name, lab in read_split_rows(path):
        where = f"{path}: line {lineno}"
        if not name or not lab:
            raise BenchmarkFormatError(f"{where}: expected 'name,label', got {[name, lab] if lab else [name]}")
        if lab.isdigit():
            i = int(lab)
            if not 1 <= i <= len(raw):
                raise BenchmarkFormatError(f"{where}: label number {i} outside 1..{len(raw)}")
            lab = raw[i - 1]
        items.append(BenchmarkItem(_key(prefix, name, pad5=spec.format == "dfew"), _label(lab, space, where)))
    return items, [path]


# ------------------------------------------------------------------------------------------- EMER
def _read_emer(spec: BenchmarkSpec) -> tuple[list[BenchmarkItem], list[Path]]:
    path = Path(spec.path)
    if not path.is_file():
        raise BenchmarkFormatError(f"{path}: EMER file not found")
    prefix = spec.key_prefix if spec.key_prefix is not None else "mer2023"
    if path.suffix.lower() == ".csv" and _mer_kind(path) in ("emer", "openset"):  # EMER V1, MER2024-OV
        if spec.text_field not in (None, "reasons"):
            raise BenchmarkFormatError(f"{path}: text_field {spec.text_field!r} is not a column of this file "
                                       "(EMER V1's reasoning is `reasons`; MER2024-OV has none)")
        items = [BenchmarkItem(_key(prefix, r.name),
                               _label(r.emotion, MER2023_LABELS, f"{path} line {r.line}", outside="neutral"),
                               None, r.reason, ov_labels=r.openset)
                 for r in _mer_rows(path, ("emer", "openset"))]
        return items, [path]
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = ([{"name": k, **(v if isinstance(v, dict) else {"reason": v})} for k, v in data.items()]
                if isinstance(data, dict) else list(data))
    else:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    text_fields = (spec.text_field,) if spec.text_field else _REASON_FIELDS
    items = []
    for i, r in enumerate(rows):
        name = _first(r, _NAME_FIELDS)
        where = f"{path}: row {i + 1}" + (f" ({name})" if name else "")
        reason = _first(r, text_fields)
        if name is None or reason is None:
            raise BenchmarkFormatError(
                f"{where}: missing fields: needs a name ({'/'.join(_NAME_FIELDS)}) and a reasoning ({'/'.join(text_fields)})"
            )
        label = _first(r, _LABEL_FIELDS)
        items.append(BenchmarkItem(_key(prefix, str(name)), _label(label, MER2023_LABELS, where, outside="neutral"),
                                   None, str(reason)))
    return items, [path]


def _mer_kind(path: Path) -> str | None:
    try:
        return csv_kind(path)[0]
    except LabelFileError:
        return None


def load_calibration_split(spec: BenchmarkSpec, split: str, setting: str) -> Benchmark:
    """The benchmark's ``split`` (validation) for calibrating AR; a clear error when it has none, or when
    one of the three CA-MER subsets is empty there (the calibration rule needs all three)."""
    if spec.format not in ("mined", "camer"):
        raise BenchmarkFormatError(
            f"setting {setting} calibrates AR on a {split} split, but benchmark {spec.name} ({spec.format}) has "
            "no CA-MER subsets; calibrate on a mined or CA-MER benchmark, or drop the setting")
    if spec.split == split:
        raise BenchmarkFormatError(f"benchmark {spec.name}: calibrating on {split} and reporting on it is tuning "
                                   "on the reported data; evaluate another split")
    try:
        bench = load_benchmark(spec.model_copy(update={"split": split, "limit": None}))
    except BenchmarkFormatError as exc:
        raise BenchmarkFormatError(f"setting {setting} needs a {split} split of benchmark {spec.name}: {exc}") from None
    bench.items = [it for it in bench.items if it.subset != AMBIGUOUS]  # the rule reads the three subsets only
    counts = {s: sum(1 for it in bench.items if it.subset == s and it.label) for s in CAMER_SUBSETS}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise BenchmarkFormatError(
            f"setting {setting} calibrates AR on the {split} split of benchmark {spec.name}, whose "
            f"subsets hold {counts}: {empty} empty, so the rule (conflict-mean within one SE of consistent "
            "accuracy) cannot be applied; change the split ratios (mine.splits) or drop the setting")
    return bench


def load_benchmark(spec: BenchmarkSpec) -> Benchmark:
    """Read ``spec``'s files; raises :class:`BenchmarkFormatError` naming the file and row on bad input."""
    shard_dirs = list(spec.shards) if isinstance(spec.shards, list) else [spec.shards] if spec.shards else []
    if spec.format in ("camer", "mined"):
        items, files, space = _read_camer(spec, mined=spec.format == "mined")
    elif spec.format == "mer2023":
        (items, files), space = _read_mer2023(spec), MER2023_LABELS
    elif spec.format == "dfew":
        (items, files), space = _read_fold(spec, DFEW_LABELS, DFEW_LABELS, ("test(single-labeled)/set_{fold}.csv",)), DFEW_LABELS
    elif spec.format == "mafw":
        (items, files), space = _read_fold(spec, MAFW_LABELS, MAFW_RAW, ("set_{fold}/test.txt", "single/no_caption/set_{fold}/test.txt")), MAFW_LABELS
    elif spec.format == "emer":
        (items, files), space = _read_emer(spec), MER2023_LABELS
    else:  # pragma: no cover - the config's Literal rules this out
        raise BenchmarkFormatError(f"unknown benchmark format {spec.format!r}")
    seen: set[str] = set()
    dups = [it.key for it in items if it.key in seen or seen.add(it.key)]
    if dups:
        raise BenchmarkFormatError(f"{spec.name}: sample(s) listed twice: {dups[:5]}")
    if spec.limit:
        items = items[: spec.limit]
    feats = Path(spec.features) if spec.features else (Path(spec.path) / "features.parquet" if spec.format == "mined" else None)
    if feats is not None and feats.is_file():  # models reading features depend on it: into the cache hash
        files.append(feats)
    return Benchmark(spec, tuple(space), items, shard_dirs, files)
