"""Generic adapter: a folder plus an optional manifest (CSV, JSONL or Parquet).

Manifest columns: ``path`` (required; relative to the root, or absolute), optional ``label``,
``split``, ``speaker``, ``transcript``, ``clip_id`` (default: the file stem); every other column goes
to ``extra``. Without a manifest, every video file under the root is a clip with no label.

With a manifest, a row whose file does not exist is quarantined at plan time as ``missing`` (naming the
path), videos under the root that no row names are reported as skipped (``unlabelled``), and the shard
summary says how many manifest rows have a clip.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator


from mosear.adapters.base import ClipRecord, DatasetAdapter

_KNOWN = {"path", "label", "split", "speaker", "transcript", "clip_id"}


def iter_manifest(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a CSV / JSONL / Parquet manifest, streamed."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as fh:
            yield from csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield {"__error__": f"line {n}: not JSON ({exc.msg})"}
    elif suffix == ".parquet":
        import pyarrow.parquet as pq  # only for a Parquet manifest: keeps `mosear --help` light

        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    else:
        raise ValueError(f"manifest {path}: unknown format {suffix!r} (csv, tsv, jsonl, parquet)")


def _clean(v: Any) -> Any:
    return None if v is None or (isinstance(v, str) and v.strip() == "") else v


class GenericAdapter(DatasetAdapter):
    name = "generic"

    def check(self, root: Path, source) -> None:
        super().check(root, source)
        if source.manifest is not None:
            m = source.manifest_path()
            if not m.is_file():
                raise ValueError(f"manifest {m} does not exist")
            if m.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"):
                raise ValueError(f"manifest {m}: unknown format (csv, tsv, jsonl, parquet)")

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        if source.manifest is None:
            for p in self.video_files(root, source):
                yield self.record(root, p, source)
            return
        manifest = source.manifest_path()
        videos = {os.path.normpath(p) for p in self.video_files(root, source)}  # non-videos: skipped, with reasons
        named: set[str] = set()
        self.coverage = {"rows": 0, "with_clip": 0}
        for n, row in enumerate(iter_manifest(manifest), 1):
            self.coverage["rows"] += 1
            where = f"{manifest.name} row {n}"
            path = _clean(row.get("path")) if "__error__" not in row else None
            if path is None:
                reason = row.get("__error__") or "no 'path' value"
                yield ClipRecord(
                    dataset=source.dataset or self.name, clip_id=f"row{n}", path="", source=where,
                    split=source.split, error=("bad_manifest_row", f"{where}: {reason}"),
                )
                continue
            label = _clean(row.get("label"))
            extra = {k: v for k, v in row.items() if k not in _KNOWN and _clean(v) is not None}
            rec = self.record(
                root, Path(str(path)), source,
                clip_id=_clean(row.get("clip_id")),
                orig_label=str(label) if label is not None else None,
                split=_clean(row.get("split")) or source.split,
                speaker=_clean(row.get("speaker")),
                transcript=_clean(row.get("transcript")),
                extra=extra,
            )
            full = os.path.normpath(os.path.abspath(rec.path))
            named.add(full)
            if os.path.exists(full):
                self.coverage["with_clip"] += 1
            else:  # a dangling link too
                rec.error = ("missing", f"{where}: {rec.path} does not exist")
            yield rec
        for path in sorted(videos - named):
            self.skipped.append({"path": path, "source": Path(path).relative_to(root).as_posix()
                                 if Path(path).is_relative_to(root) else path, "reason": "unlabelled"})
