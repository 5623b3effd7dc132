"""The evaluation protocol's checks: never score a checkpoint on keys it trained on.

:func:`check_overlap` runs before any unit: for every checkpoint it reads the keys it trained on
(``train_keys.json`` in the adapter folder, :mod:`mosear.train.keys`) and counts the benchmark's items
among them, for the evaluated split and, when a setting calibrates AR, for the calibration split too.

- shared keys and ``allow_overlap: false`` (the default): :class:`OverlapError` naming each count;
- shared keys and ``allow_overlap: true``: evaluated, recorded; the report's first line says so;
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
        entry.update(train_keys=tk.digest, train_count=tk.count)
        for bname, bench in benches.items():
            shared = sum(1 for it in bench.items if it.key in tk.keys)
            rec = {"split": bench.spec.split, "items": len(bench.items), "shared": shared}
            cal = calib_benches.get(bname)
            if cal is not None:
                rec["calibration_items"] = len(cal.items)
                rec["calibration_shared"] = sum(1 for it in cal.items if it.key in tk.keys)
            entry["benchmarks"][bname] = rec
            for what, n, total in (("evaluated", shared, len(bench.items)),
                                   ("calibration", rec.get("calibration_shared", 0), rec.get("calibration_items", 0))):
                if n:
                    problems.append(f"checkpoint {name} trained on {n} of the {total} {what} items of benchmark "
                                    f"{bname}" + (f" (split {bench.spec.split or 'default'})" if what == "evaluated" else ""))
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
