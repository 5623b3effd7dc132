"""The evaluation protocol's checks: never score a checkpoint on clips it trained on.

:func:`check_overlap` runs before any unit: for every checkpoint it reads the clips it trained on
(``train_keys.json`` in the adapter folder, :mod:`mosear.train.keys`) and counts the benchmark's items
among them, for the evaluated split and, when a setting calibrates AR, for the calibration split too.
An item is one the checkpoint trained on when it is the same clip, whatever the dataset prefixes of
the two keys (EMER's and CA-MER's clips are MER2023 training clips):

- the same key;
- the same bytes: the item's ``source_sha256`` in its benchmark's shard indexes equals a trained clip's
  (``mosear shard`` records the SHA-256 of each clip file);
- the same clip name in the MER family's naming (``sample_XXXXXXXX``, shared by MER2023, MER2024,
  MER2025, EMER and CA-MER: :func:`mosear.adapters._mer_files.mer_clip_name`), whether or not the two
  sides' files were byte-identical (a re-encoded copy is the same clip).

- shared clips and ``allow_overlap: false`` (the default): :class:`OverlapError` naming each count
  (and how many matched by key, by content, by MER name);
- shared clips and ``allow_overlap: true``: evaluated, recorded; the report's first line says so;
- a checkpoint without ``train_keys.json`` (trained before the keys were recorded): evaluated with a
  warning, in the log, ``run.json`` and the report's first lines, since its overlap cannot be checked.

The outcome is written to ``{output}/protocol.json`` (:func:`write_protocol`, read by the report).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mosear.atomic import atomic_write_json
from mosear.config import ConfigError

__all__ = ["OverlapError", "check_overlap", "write_protocol", "read_protocol", "PROTOCOL_FILE", "protocol_notes"]

log = logging.getLogger(__name__)

PROTOCOL_FILE = "protocol.json"


class OverlapError(ConfigError):
    """A checkpoint would be evaluated on keys it trained on; the message names the counts."""


def _source_digests(bench: Any) -> dict[str, str]:
    """``key -> source_sha256`` of the benchmark's items, from the index of every committed shard in its
    shard folders (a folder that does not exist, or shards written before the column existed, give none)."""
    import pyarrow.parquet as pq

    from mosear.shards.reader import list_shards

    wanted, out = {it.key for it in bench.items}, {}
    for d in getattr(bench, "shard_dirs", []) or []:
        if "://" in str(d) or not Path(d).is_dir():
            continue
        for tar in list_shards(d):
            index = tar.with_name(tar.name[: -len(".tar")] + ".index.parquet")
            if not index.is_file() or "source_sha256" not in pq.read_schema(index).names:
                continue
            for r in pq.read_table(index, columns=["key", "source_sha256"]).to_pylist():
                if r["key"] in wanted and r["source_sha256"]:
                    out[r["key"]] = r["source_sha256"]
    return out


class _Trained:
    """A checkpoint's training clips, indexed by key, by content digest and by MER clip name."""

    def __init__(self, tk: Any) -> None:
        from mosear.adapters._mer_files import mer_clip_name

        self.keys = tk.keys
        self.digests = set(tk.sources.values())
        self.names = {n for n in (mer_clip_name(k) for k in tk.keys) if n}

    def shared(self, items: list[Any], digests: dict[str, str]) -> dict[str, int]:
        """``{"total", "key", "content", "mer_name"}``: items that are training clips, and by what they
        matched first (key, then content, then name)."""
        from mosear.adapters._mer_files import mer_clip_name

        out = {"total": 0, "key": 0, "content": 0, "mer_name": 0}
        for it in items:
            if it.key in self.keys:
                how = "key"
            elif digests.get(it.key) in self.digests:
                how = "content"
            elif mer_clip_name(it.key) in self.names:
                how = "mer_name"
            else:
                continue
            out["total"] += 1
            out[how] += 1
        return out


def _how(counts: dict[str, int]) -> str:
    parts = [f"{counts[k]} {label}" for k, label in (("key", "by key"), ("content", "by the clip's bytes"),
                                                     ("mer_name", "by MER clip name")) if counts.get(k)]
    return f" ({', '.join(parts)})" if parts and parts != [f"{counts['total']} by key"] else ""


def check_overlap(cfg: Any, benches: dict[str, Any], calib_benches: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"allow_overlap": bool, "checkpoints": {name: {...}}}``; raises :class:`OverlapError` (see above).

    ``benches`` / ``calib_benches``: benchmark name -> loaded :class:`~mosear.evaluate.benchmark_files.Benchmark`
    of the evaluated split / of the calibration split.
    """
    from mosear.evaluate.units import checkpoint_names
    from mosear.train.keys import read_train_keys

    calib_benches = calib_benches or {}
    out: dict[str, Any] = {"allow_overlap": bool(cfg.allow_overlap), "checkpoints": {}}
    problems: list[str] = []
    digests: dict[str, dict[str, str]] = {}  # benchmark -> key -> source_sha256 (read once)
    for name, path in checkpoint_names(cfg.checkpoints):
        if path == "base":
            out["checkpoints"][name] = {"path": path, "train_keys": "none (base model, no training)"}
            continue
        if path == "endpoint":  # a served model: what it trained on is not ours to know
            out["checkpoints"][name] = {"path": path, "train_keys": "unknown (endpoint model)"}
            continue
        try:
            tk = read_train_keys(path)
        except ValueError as exc:
            raise ConfigError(f"checkpoint {name}: {exc}") from None
        entry: dict[str, Any] = {"path": path, "benchmarks": {}}
        if tk is None:
            entry["train_keys"] = None
            entry["warning"] = (f"checkpoint {name} ({path}) records no training keys (train_keys.json; trained "
                                "before they were recorded): whether it trained on the evaluated items is unknown")
            log.warning("%s", entry["warning"])
            out["checkpoints"][name] = entry
            continue
        trained = _Trained(tk)
        entry.update(train_keys=tk.digest, train_count=tk.count, train_sources=len(trained.digests))
        for bname, bench in benches.items():
            if bname not in digests:
                digests[bname] = _source_digests(bench)
            counts = trained.shared(bench.items, digests[bname])
            rec = {"split": bench.spec.split, "items": len(bench.items), "shared": counts["total"],
                   "shared_by": {k: v for k, v in counts.items() if k != "total"}}
            cal = calib_benches.get(bname)
            cal_counts = {"total": 0}
            if cal is not None:
                cal_counts = trained.shared(cal.items, _source_digests(cal))
                rec["calibration_items"] = len(cal.items)
                rec["calibration_shared"] = cal_counts["total"]
            entry["benchmarks"][bname] = rec
            for what, c, total in (("evaluated", counts, len(bench.items)),
                                   ("calibration", cal_counts, rec.get("calibration_items", 0))):
                if c["total"]:
                    problems.append(f"checkpoint {name} trained on {c['total']} of the {total} {what} items of benchmark "
                                    f"{bname}" + (f" (split {bench.spec.split or 'default'})" if what == "evaluated" else "")
                                    + _how(c))
        out["checkpoints"][name] = entry
    if problems and not cfg.allow_overlap:
        raise OverlapError(
            "; ".join(problems) + ". Scores on items a model trained on say nothing about new items: evaluate "
            "another split (benchmarks[].split) or another checkpoint, or set allow_overlap: true to evaluate "
            "anyway (the report then says so in its first line)."
        )
    out["overlaps"] = problems
    return out


def write_protocol(output: str | Path, record: dict[str, Any]) -> Path:
    return atomic_write_json(Path(output) / PROTOCOL_FILE, record)


def read_protocol(output: str | Path) -> dict[str, Any] | None:
    p = Path(output) / PROTOCOL_FILE
    return json.loads(p.read_text()) if p.is_file() else None


def protocol_notes(record: dict[str, Any] | None) -> list[str]:
    """Sentences the report (and terminal) put first: overlaps allowed, checkpoints without keys."""
    if not record:
        return []
    notes = []
    if record.get("overlaps"):
        notes.append("WARNING: evaluated with allow_overlap: true, on items the checkpoint trained on: "
                     + "; ".join(record["overlaps"]) + ". These scores do not measure generalisation.")
    for entry in record.get("checkpoints", {}).values():
        if entry.get("warning"):
            notes.append("WARNING: " + entry["warning"] + ".")
    return notes
