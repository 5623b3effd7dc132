"""The MER family's release files (MER2023 / MER2024 / MER2025, EMER), read one way for the ``mer2023``
shard adapter and the benchmark readers (:mod:`mosear.evaluate.benchmark_files`).

- :func:`read_npz_safely`: MERTools' ``label-6way.npz`` (object arrays of dicts) without pickle's
  code execution: each member's ``.npy`` header is read by NumPy, object payloads by an allow-listing
  unpickler (plain dicts, lists, strings and numbers only).
- :func:`read_mer_csv`: a label CSV, recognised by its column set (:data:`COLUMN_SETS`):

  ============  ===========================================  =====================================
  kind          columns (release files)                      read as
  ============  ===========================================  =====================================
  ``labels``    ``name,discrete[,valence]`` (``train-label.csv``, ``test1-label.csv``, MER2025
                ``track1_train_disdim.csv``, ``track1_test_dis.csv``); ``emo``/``val`` and a
                ``split`` column accepted
  ``openset``   ``name,openset`` (MER2024 ``check-openset.csv``, MER2025 track 2): ``openset`` a
                Python list literal, parsed with :func:`ast.literal_eval` and nothing else
  ``emer``      ``names,emotions,subtitles,reasons`` (EMER V1; English or Chinese emotion words)
  ============  ===========================================  =====================================

  Any other column set is an error naming the file and its columns. A row that cannot be read (a list
  literal that does not parse, an unknown emotion word, a valence that is not a number) comes back
  with ``error`` naming the file, line and field: the shard adapter quarantines it, a benchmark reader
  refuses the file.
- :func:`split_from_filename`: the split a per-split label file's name says (``test1-label.csv`` ->
  ``test1``, ``track1_train_disdim.csv`` -> ``train``); ``None`` when it says none.
- :func:`emotion_word`: an English or Chinese emotion word -> canonical label (:data:`ZH_EMOTIONS`).
- :func:`mer_clip_name`: the MER family's own clip name (``sample_00000001``) in a key, the identity
  shared by MER2023, MER2024, MER2025, EMER and CA-MER (:mod:`mosear.evaluate.protocol` compares it).
"""

from __future__ import annotations

import ast
import csv
import io
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mosear.labels import canonical_label

__all__ = ["LabelFileError", "MerRow", "COLUMN_SETS", "ZH_EMOTIONS", "read_npz_safely", "read_mer_csv",
           "csv_kind", "split_from_filename", "emotion_word", "mer_clip_name"]


class LabelFileError(ValueError):
    """A label file that cannot be read as any MER release format; the message names the file."""


# ------------------------------------------------------------------------------------------ .npz
_NPZ_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "str"), ("builtins", "float"), ("builtins", "int"),
    ("collections", "OrderedDict"),
}


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NPZ_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a label file")
        return super().find_class(module, name)


def read_npz_safely(path: Path) -> dict[str, object]:
    """Entries of an ``.npz`` whose object arrays hold only dicts/strings/numbers (MERTools labels).

    ``np.load(allow_pickle=True)`` would run arbitrary pickled code; this reads each member's ``.npy``
    header with NumPy and unpickles object payloads with an allow-list of plain types. Raises
    ``zipfile.BadZipFile``, ``pickle.UnpicklingError`` (a type outside the allow-list: nothing of it ran)
    or ``ValueError`` (not an ``.npy`` member).
    """
    out: dict[str, object] = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            name = member[:-4] if member.endswith(".npy") else member
            with z.open(member) as f:
                buf = io.BytesIO(f.read())
            version = np.lib.format.read_magic(buf)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            _shape, _fortran, dtype = read_header(buf)
            if dtype.hasobject:
                arr = _AllowListUnpickler(buf).load()
            else:
                buf.seek(0)
                arr = np.lib.format.read_array(buf, allow_pickle=False)
            out[name] = arr.item() if isinstance(arr, np.ndarray) and arr.shape == () else arr
    return out


# ------------------------------------------------------------------------------------- words
# EMER V1's Chinese emotion words (and their common synonyms) -> canonical label; the table is in
# datasets/mer2023/card.md. English words go through mosear.labels.canonical_label.
ZH_EMOTIONS: dict[str, str] = {
    "中性": "neutral", "平静": "neutral", "中立": "neutral",
    "生气": "angry", "愤怒": "angry",
    "高兴": "happy", "开心": "happy", "快乐": "happy",
    "悲伤": "sad", "伤心": "sad", "难过": "sad",
    "担忧": "worried", "担心": "worried", "焦虑": "worried",
    "惊讶": "surprise", "惊奇": "surprise",
    "恐惧": "fear", "害怕": "fear",
    "厌恶": "disgust",
    "轻蔑": "contempt",
    "怀疑": "doubt",
}


def emotion_word(raw: str | None) -> str | None:
    """The canonical label of an English or Chinese emotion word; None when it is neither."""
    if raw is None:
        return None
    word = str(raw).strip()
    return ZH_EMOTIONS.get(word) or canonical_label(word)


# ------------------------------------------------------------------------------------- CSV files
# kind -> (required columns: each a tuple of accepted spellings, optional columns)
COLUMN_SETS: dict[str, tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]] = {
    "labels": ((("name",), ("discrete", "emo")), ("valence", "val", "split")),
    "openset": ((("name",), ("openset",)), ("split",)),
    "emer": ((("names", "name"), ("emotions",), ("reasons",)), ("subtitles", "split")),
}
_INDEX_COLUMNS = ("", "Unnamed: 0", "index")  # a pandas index column written by to_csv

_SPLIT_NAMES = (
    re.compile(r"^(?P<split>train|val|valid|validation|dev|test\d*)-label\.csv$", re.I),  # MER2023/2024
    re.compile(r"^track\d+_(?P<split>train|val|valid|dev|test\d*)_[a-z]+\.csv$", re.I),  # MER2025
)
_SAFE_SPLIT = re.compile(r"^[A-Za-z0-9_-]+$")
_MER_NAME = re.compile(r"^(sample|samplenew\d*)_\d{8}$")


def split_from_filename(path: Path) -> str | None:
    """The split a per-split label file's name says (``test1-label.csv`` -> ``test1``); None when none."""
    for pattern in _SPLIT_NAMES:
        m = pattern.match(Path(path).name)
        if m:
            return m.group("split").lower()
    return None


def mer_clip_name(key: str) -> str | None:
    """``sample_XXXXXXXX`` when ``key`` (``{dataset}__{name}`` or a bare name) names a clip in the MER
    family's naming, whatever the dataset prefix; None otherwise."""
    name = key.split("__", 1)[1] if "__" in key else key
    return name if _MER_NAME.match(name) else None


def csv_kind(path: Path) -> tuple[str, dict[str, str]]:
    """``(kind, {role: column})`` of a MER label CSV from its header; :class:`LabelFileError` naming the
    file and its columns when they match no kind of :data:`COLUMN_SETS`."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise LabelFileError(f"{path}: empty file (expected a header row)")
    cols = [c.strip() for c in header]
    present = [c for c in cols if c not in _INDEX_COLUMNS]
    for kind, (required, optional) in COLUMN_SETS.items():
        roles: dict[str, str] = {}
        for spellings in required:
            found = next((s for s in spellings if s in present), None)
            if found is None:
                break
            roles[spellings[0]] = found
        else:
            allowed = {c for sp in required for c in sp} | set(optional)
            extra = [c for c in present if c not in allowed]
            if extra:
                raise LabelFileError(f"{path}: columns {extra} are not part of a MER {kind} file "
                                     f"({_describe(kind)}); rename or drop them")
            roles.update({c: c for c in optional if c in present})
            return kind, roles
    raise LabelFileError(f"{path}: unknown column set {present}; expected one of: "
                         + "; ".join(f"{k} ({_describe(k)})" for k in COLUMN_SETS))


def _describe(kind: str) -> str:
    required, optional = COLUMN_SETS[kind]
    return ",".join("|".join(sp) for sp in required) + (f" [+ {','.join(optional)}]" if optional else "")


@dataclass
class MerRow:
    """One row of a MER label CSV. ``line``: its line in the file (the header is line 1)."""

    line: int
    name: str
    emotion: str | None = None       # the file's own word (English or Chinese)
    label: str | None = None         # canonical (None: no word, or the row's error says why)
    valence: float | None = None     # None for MER2024's -10 placeholder
    split: str | None = None         # from a split column only
    openset: tuple[str, ...] = ()    # open-vocabulary labels, lower case
    reason: str | None = None        # EMER's reasoning text
    subtitle: str | None = None
    error: str | None = None         # "file line N field F: cause" when the row cannot be read


def _openset(raw: str) -> tuple[str, ...]:
    value = ast.literal_eval(raw.strip())  # literals only: never runs code
    if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) for w in value):
        raise ValueError(f"expected a list of words, got a {type(value).__name__}")
    return tuple(w.strip().lower() for w in value if w.strip())


def read_mer_csv(path: Path) -> tuple[str, list[MerRow]]:
    """``(kind, rows)`` of a MER label CSV (see the module docstring); rows that cannot be read carry
    ``error``. Raises :class:`LabelFileError` for an unknown column set."""
    kind, roles = csv_kind(path)
    rows: list[MerRow] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
        for r in reader:
            line = reader.line_num
            get = lambda role: (r.get(roles.get(role, "")) or "").strip()  # noqa: E731
            name = get("names" if kind == "emer" else "name")
            row = MerRow(line, name)
            where = f"{path} line {line}"
            if not name:
                row.error = f"{where} field {roles.get('names', roles.get('name'))!r}: no clip name"
                rows.append(row)
                continue
            if get("split"):
                row.split = get("split")
                if not _SAFE_SPLIT.match(row.split):
                    row.error = f"{where} field 'split': {row.split!r} is not a split name ([A-Za-z0-9_-])"
            if kind == "labels":
                row.emotion = get("discrete") or None
                val = get("valence")
                if val:
                    try:
                        v = float(val)
                        row.valence = None if v == -10 else v
                    except ValueError:
                        row.error = f"{where} field {roles['valence']!r}: {val!r} is not a number"
            elif kind == "openset":
                try:
                    row.openset = _openset(get("openset"))
                except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                    row.error = (f"{where} field 'openset': {get('openset')!r} is not a Python list literal of "
                                 f"words ({type(exc).__name__}: {exc})")
            else:
                row.emotion = get("emotions") or None
                row.reason = get("reasons") or None
                row.subtitle = get("subtitles") or None
            if row.emotion is not None:
                row.label = emotion_word(row.emotion)
                if row.label is None and row.error is None:
                    field = roles.get("discrete") or "emotions"
                    row.error = (f"{where} field {field!r}: unknown emotion word {row.emotion!r} (known: English "
                                 f"labels and {', '.join(ZH_EMOTIONS)}; datasets/mer2023/card.md)")
            rows.append(row)
    return kind, rows
