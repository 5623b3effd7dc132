"""Dataset adapters: turn a corpus folder (+ its label files) into :class:`ClipRecord` s.

An adapter is a class with one method, ``clips(root, source)``, yielding a record per clip, lazily
(a corpus is never held in memory by the adapter; the shard planner keeps only these small records).
A row that cannot become a clip (a bad file name, a manifest row without a path) is still yielded,
with ``error=(reason, message)`` set, so that it ends in ``quarantine.parquet`` instead of vanishing.

A new adapter is ~20 lines: subclass :class:`DatasetAdapter`, set ``name``, implement ``clips``, add it
to :data:`mosear.adapters.ADAPTERS`, and write ``datasets/<name>/card.md``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from pydantic import BaseModel

from mosear.adapters.source import SourceConfig
from mosear.labels import canonical_label

__all__ = ["ClipRecord", "ClipIndex", "DatasetAdapter", "safe_id", "VIDEO_EXTENSIONS", "AUDIO_EXTENSIONS",
           "SKIP_REASONS"]

# File extensions of containers and raw streams libav opens as video (a folder's clips by default).
# Anything else becomes a clip only when the source lists its extension (``SourceConfig.extensions``).
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".mj2",  # ISO BMFF / QuickTime
    ".mkv", ".mk3d", ".webm",  # Matroska
    ".avi", ".divx", ".flv", ".f4v", ".wmv", ".asf", ".ogv", ".nut", ".mxf", ".dv", ".rm", ".rmvb",
    ".ts", ".m2ts", ".mts", ".m2t", ".trp", ".mpg", ".mpeg", ".m2p", ".vob", ".evo",  # MPEG-TS / PS
    ".h264", ".264", ".avc", ".h265", ".265", ".hevc", ".m1v", ".m2v", ".mpv", ".ivf", ".obu", ".y4m",
    ".vc1", ".mjpeg", ".mjpg",  # raw elementary streams
)
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aif", ".aiff",
                    ".ac3", ".amr", ".ape", ".wv", ".mka")
# Why a file in a clip folder is not a clip (reported in run.json and the summary, never silent).
SKIP_REASONS = {
    "audio_only": "an audio file: no video stream to shard",
    "unknown_extension": "not a known video extension (list it in the source's `extensions` to shard it)",
    "hidden": "a hidden file (name starts with '.')",
    "not_a_take": "in a splice source's faces/voices folder, not a take of the kind the pairing policy pairs",
    "unlabelled": "a video under a label-file adapter's root that no label row names",
    "same_name": "a video with the same name as another that a label row already took (first in sorted order wins)",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_id(name: str) -> str:
    """A clip id made of ``[A-Za-z0-9_-]`` only (DESIGN.md §3), stable and collision-safe.

    Accents are folded to ASCII and other runs of characters become ``_``; when anything had to change,
    8 hex digits of the original name's SHA-1 are appended so that ``a b`` and ``a_b`` stay distinct.
    """
    if name and not _UNSAFE.search(name):
        return name
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE.sub("_", folded).strip("_") or "clip"
    return f"{cleaned}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


@dataclass
class ClipRecord:
    """One clip as the adapter sees it (no media opened yet).

    ``path`` is where the file is (absolute, not resolved through links); ``source`` is the same path
    relative to the corpus root as written in the sample metadata. ``label`` is canonical (or None),
    ``orig_label`` the dataset's own.
    """

    dataset: str
    clip_id: str
    path: str
    source: str
    split: str
    orig_label: str | None = None
    label: str | None = None
    speaker: str | None = None
    transcript: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (reason, message) for rows that cannot become a clip
    # A counterfactual splice (mosear.adapters.splice): the clip is the video of `path` with the audio of
    # this file, delayed by `extra["offset_s"]` seconds; None for every other clip.
    voice: str | None = None
    # SHA-256 of the clip file's bytes: set by the shard stage from its digest memo (not by adapters), written
    # to the shard index as ``source_sha256``; the clip's identity across datasets (mosear.evaluate.protocol)
    sha256: str | None = None

    @property
    def key(self) -> str:
        return f"{self.dataset}__{self.clip_id}"

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["error"] = list(self.error) if self.error else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipRecord":
        d = dict(d)
        d["error"] = tuple(d["error"]) if d.get("error") else None
        return cls(**d)


class DatasetAdapter:
    """Base class. ``name`` is the adapter's name and the default dataset name of its keys."""

    name: str = "base"
    label_map: dict[str, str | None] = {}  # dataset label -> canonical label (see the card)
    # a pydantic model of the adapter's `options` (validated with the shard config), or None: free-form
    options_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self) -> None:
        # files of the folder that are not clips, as {"path", "source", "reason"} (see SKIP_REASONS);
        # filled while ``clips`` runs, read by the shard planner
        self.skipped: list[dict[str, str]] = []
        # label-file adapters: {"rows": label rows read, "with_clip": rows whose clip was found}; None for
        # adapters that list a folder (every clip they yield exists). Read by the shard planner.
        self.coverage: dict[str, int] | None = None

    def clips(self, root: Path, source: SourceConfig) -> Iterator[ClipRecord]:
        raise NotImplementedError

    def check(self, root: Path, source: SourceConfig) -> None:
        """Raise ``ValueError`` (with the reason) when the source cannot be read at all; before any work."""
        if not root.is_dir():
            raise ValueError(f"corpus root {root} is not a folder")

    def input_paths(self, root: Path, source: SourceConfig) -> list[Path]:
        """The files and folders whose content the source's clips come from (the shard stage's identity
        digests them): the root and the manifest; adapters reading more (option paths) add theirs."""
        return [root] + ([source.manifest_path()] if source.manifest is not None else [])

    # helpers for subclasses -------------------------------------------------------------------
    def map_label(self, raw: str | None) -> str | None:
        if raw is None or raw == "":
            return None
        if raw in self.label_map:
            return self.label_map[raw]
        return canonical_label(raw)

    def record(
        self, root: Path, path: Path, source: SourceConfig, clip_id: str | None = None, **kw: Any
    ) -> ClipRecord:
        """A record for ``path`` (relative to ``root`` or absolute) with the source's defaults."""
        full = path if path.is_absolute() else root / path
        try:
            rel = full.relative_to(root).as_posix()
        except ValueError:
            rel = str(full)
        kw.setdefault("split", source.split)
        if "orig_label" in kw and "label" not in kw:
            kw["label"] = self.map_label(kw["orig_label"])
        return ClipRecord(
            dataset=source.dataset or self.name,
            clip_id=safe_id(clip_id if clip_id is not None else full.stem),
            path=str(full),
            source=rel,
            **kw,
        )

    def bad_name(self, root: Path, path: Path, source: SourceConfig, expected: str) -> ClipRecord:
        """A record for a file not named by the dataset's scheme: quarantined as ``bad_name`` at plan time."""
        rec = self.record(root, path, source)
        rec.error = ("bad_name", f"{path.name} is not a {expected}")
        return rec

    def video_files(self, root: Path, source: SourceConfig | None = None,
                    exclude: tuple[Path, ...] = ()) -> Iterator[Path]:
        """Video files under ``root`` (recursive, sorted, by extension; links included).

        Every other file is recorded in :attr:`skipped` with its reason, except the source's own
        manifest / label file and anything in or under ``exclude`` (files or folders the adapter reads
        as labels). ``source.extensions`` adds extensions to :data:`VIDEO_EXTENSIONS`.
        """
        extra = tuple(source.extensions) if source is not None else ()
        own = {source.manifest_path().resolve()} if source is not None and source.manifest is not None else set()
        own_dirs = tuple(Path(e).resolve() for e in exclude)
        for p in sorted(root.rglob("*")):
            if own_dirs and any(p.resolve() == d or d in p.resolve().parents for d in own_dirs):
                continue
            suffix = p.suffix.lower()
            if p.is_dir():  # folders are not inputs, unless named like a clip (then quarantined: not_a_file)
                if (suffix in VIDEO_EXTENSIONS or suffix in extra) and not p.name.startswith("."):
                    yield p
                continue
            if p.name.startswith("."):
                reason = "hidden"
            elif suffix in VIDEO_EXTENSIONS or suffix in extra:
                yield p
                continue
            elif p.resolve() in own:
                continue
            else:
                reason = "audio_only" if suffix in AUDIO_EXTENSIONS else "unknown_extension"
            try:
                rel = p.relative_to(root).as_posix()
            except ValueError:
                rel = str(p)
            self.skipped.append({"path": str(p), "source": rel, "reason": reason})


class ClipIndex:
    """The videos under a label-file adapter's root, found by the names its label rows give.

    Built once per source (one recursive listing; files that are not videos go to the adapter's
    :attr:`~DatasetAdapter.skipped` as :meth:`DatasetAdapter.video_files` says); :meth:`find` looks a row's
    candidate names up and counts the adapter's :attr:`~DatasetAdapter.coverage`; :meth:`finish`
    reports the videos no row named as skipped (``unlabelled``, or ``same_name`` for a second file with
    a stem already taken). ``missing`` quarantine messages name where the search looked.
    """

    def __init__(self, adapter: DatasetAdapter, root: Path, source: SourceConfig, exclude: tuple[Path, ...] = ()):
        self.adapter, self.root, self.source = adapter, root, source
        self.by_stem: dict[str, list[Path]] = {}
        for p in adapter.video_files(root, source, exclude):
            self.by_stem.setdefault(p.stem, []).append(p)
        self.used: set[str] = set()
        adapter.coverage = {"rows": 0, "with_clip": 0}

    def find(self, names: list[str] | tuple[str, ...]) -> Path | None:
        """The video of the first of ``names`` (file stems, most likely first) under the root; None when
        none exists. Counts the row in the adapter's coverage."""
        assert self.adapter.coverage is not None
        self.adapter.coverage["rows"] += 1
        for name in names:
            if name in self.by_stem:
                self.used.add(name)
                self.adapter.coverage["with_clip"] += 1
                return self.by_stem[name][0]
        return None

    def pattern(self, names: list[str] | tuple[str, ...]) -> str:
        """Where :meth:`find` looked, for a message: ``{root}/**/{name}.<ext>`` for each name."""
        exts = "|".join(e.lstrip(".") for e in ("mp4", "avi", "mkv", "mov", "webm", *self.source.extensions))
        alts = " or ".join(f"{self.root}/**/{n}.{{{exts},...}}" for n in dict.fromkeys(names))
        return f"searched {alts} (recursive, any video extension mosear knows)"

    def clip(self, names: list[str] | tuple[str, ...], clip_id: str, **kw: Any) -> ClipRecord:
        """A record for the row naming ``names``: its found video, or quarantined as ``missing`` with
        where the search looked (then ``path`` is the first name's would-be ``.mp4`` under the root)."""
        path = self.find(names)
        rec = self.adapter.record(self.root, path if path is not None else self.root / f"{names[0]}.mp4",
                                  self.source, clip_id=clip_id, **kw)
        if path is None:
            rec.error = ("missing", f"no video for {clip_id}: {self.pattern(names)}")
        return rec

    def finish(self) -> None:
        """Report the videos no row named (call once, after the last row)."""
        for stem, paths in sorted(self.by_stem.items()):
            for i, p in enumerate(paths):
                if stem in self.used and i == 0:
                    continue
                try:
                    rel = p.relative_to(self.root).as_posix()
                except ValueError:
                    rel = str(p)
                reason = "same_name" if stem in self.used else "unlabelled"
                self.adapter.skipped.append({"path": str(p), "source": rel, "reason": reason})
