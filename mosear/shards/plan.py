"""Plan a shard run: list the corpus through its adapters, quarantine what cannot be a clip, and cut
the rest into deterministic shards.

The plan depends only on the corpus listing and the config: clips are grouped by split, sorted by key
and cut every ``planned_samples_per_shard()`` clips, so the same corpus and config always put the same
keys in the same ``{split}-{NNNNNN}`` shard, whichever clips later fail to decode.

Plan-time quarantine reasons: ``bad_name`` / ``bad_manifest_row`` / ``bad_label`` (from adapters),
``missing`` (a label row whose clip is not under the root: found here, never given a shard, the message
says where it was looked for), ``outside_root`` (a manifest path that leaves the corpus root),
``duplicate_key`` (a second clip with the same key; the first by source path is kept). So a partial
download (full label files, some of the videos) plans shards of the clips it has and no empty ones;
``CorpusPlan.coverage`` says how many label rows have a clip, per label-file source.

Files of a clip folder that are not clips (audio-only files, unknown extensions, hidden files; see
:data:`mosear.adapters.base.SKIP_REASONS`) are counted as inputs and listed in ``CorpusPlan.skipped``,
so that ``inputs = written + quarantined + skipped`` always.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from mosear.adapters import ClipRecord, get_adapter
from mosear.adapters._mer_files import LabelFileError
from mosear.config import ConfigError
from mosear.shards.config import ShardConfig

__all__ = ["ShardPlan", "CorpusPlan", "plan_corpus", "quarantine_row", "keys_digest"]


@dataclass
class ShardPlan:
    split: str
    index: int
    clips: list[dict[str, Any]]  # ClipRecord.to_dict(), sorted by key

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"

    @property
    def digest(self) -> str:
        return keys_digest([c["dataset"] + "__" + c["clip_id"] for c in self.clips])


@dataclass
class CorpusPlan:
    shards: list[ShardPlan]
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    inputs: int = 0  # clips listed + files skipped
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {dataset, path, source, reason}, by path
    # label-file sources: {"source": i, "adapter", "dataset", "rows": label rows, "with_clip": rows with a clip}
    coverage: list[dict[str, Any]] = field(default_factory=list)

    def coverage_line(self) -> str | None:
        """``"N of M label rows have a clip"`` (per source when several), or None without label-file sources."""
        if not self.coverage:
            return None
        rows = sum(c["rows"] for c in self.coverage)
        with_clip = sum(c["with_clip"] for c in self.coverage)
        line = f"{with_clip} of {rows} label rows have a clip"
        if len(self.coverage) > 1:
            line += " (" + ", ".join(f"sources.{c['source']} {c['adapter']}: {c['with_clip']} of {c['rows']}"
                                     for c in self.coverage) + ")"
        return line

    def skipped_report(self, first: int = 10) -> dict[str, Any]:
        """``{"count", "by_reason", "first"}``: what run.json and the summary say about skipped files."""
        by_reason: dict[str, int] = {}
        for r in self.skipped:
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
        return {"count": len(self.skipped), "by_reason": dict(sorted(by_reason.items())),
                "first": [f"{r['source']} ({r['reason']})" for r in self.skipped[:first]]}


def keys_digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def quarantine_row(rec: ClipRecord | dict[str, Any], reason: str, error: str, stage: str) -> dict[str, Any]:
    d = rec.to_dict() if isinstance(rec, ClipRecord) else rec
    return {
        "key": f"{d['dataset']}__{d['clip_id']}",
        "dataset": d["dataset"], "clip_id": d["clip_id"], "split": d.get("split"),
        "source": d.get("source"), "path": d.get("path"), "label": d.get("label"),
        "reason": reason, "error": error, "stage": stage,
    }


def _inside(path: str, root: str) -> bool:
    # Lexical check (no link resolution): a link inside the root is the corpus's own business.
    p = os.path.normpath(os.path.abspath(path))
    return p == root or p.startswith(root.rstrip(os.sep) + os.sep)


def plan_corpus(cfg: ShardConfig) -> CorpusPlan:
    """List every source; raises ConfigError (before any work) when a source cannot be read at all."""
    plan = CorpusPlan(shards=[])
    candidates: list[ClipRecord] = []
    named: set[str] = set()  # the files the sources' records name (clips or not)
    for i, source in enumerate(cfg.sources):
        adapter = get_adapter(source.adapter)
        root = source.root_path()
        try:
            adapter.check(root, source)
        except ValueError as exc:
            raise ConfigError(f"sources.{i} ({source.adapter}): {exc}") from None
        try:
            listed = list(adapter.clips(root, source))  # small records; label files are read whole anyway
        except LabelFileError as exc:
            raise ConfigError(f"sources.{i} ({source.adapter}): {exc}") from None
        for rec in listed:
            plan.inputs += 1
            if rec.path:
                named.add(os.path.normpath(rec.path))
            if rec.error is not None:
                plan.quarantine.append(quarantine_row(rec, rec.error[0], rec.error[1], "plan"))
            elif not _inside(rec.path, str(root)) or (rec.voice is not None and not _inside(rec.voice, str(root))):
                where = rec.path if not _inside(rec.path, str(root)) else rec.voice
                plan.quarantine.append(quarantine_row(
                    rec, "outside_root", f"{where} is outside the corpus root {root}", "plan"))
            else:
                candidates.append(rec)
        for row in adapter.skipped:
            plan.skipped.append({"dataset": source.dataset or adapter.name, **row})
        # a label file the source reads is no skipped file of another source sharing the folder
        named.update(os.path.normpath(os.path.abspath(p)) for p in adapter.input_paths(root, source)[1:] if p.is_file())
        if adapter.coverage is not None:
            plan.coverage.append({"source": i, "adapter": source.adapter, "dataset": source.dataset or adapter.name,
                                  **adapter.coverage})

    # Sources sharing a root (one label file per split over one video folder) each list its files: a file
    # counts once, and a video another source's rows name is not "unlabelled".
    seen: set[str] = set()
    skipped = []
    for row in plan.skipped:
        path = os.path.normpath(row["path"])
        if path in seen or path in named:  # a file a row of another source (or a manifest) names is a clip
            continue
        seen.add(path)
        skipped.append(row)
    plan.skipped = skipped
    plan.inputs += len(skipped)

    candidates.sort(key=lambda r: (r.key, r.path))
    kept: list[ClipRecord] = []
    for rec in candidates:
        if kept and kept[-1].key == rec.key:
            plan.quarantine.append(quarantine_row(
                rec, "duplicate_key",
                f"key {rec.key} is also {kept[-1].source} ({kept[-1].path}); that one is kept", "plan"))
        else:
            kept.append(rec)

    per_shard = cfg.planned_samples_per_shard()
    by_split: dict[str, list[ClipRecord]] = {}
    for rec in kept:
        by_split.setdefault(rec.split, []).append(rec)
    for split in sorted(by_split):
        recs = by_split[split]
        for n, start in enumerate(range(0, len(recs), per_shard)):
            plan.shards.append(ShardPlan(split, n, [r.to_dict() for r in recs[start : start + per_shard]]))
    plan.quarantine.sort(key=lambda r: (r["key"], r["reason"], r["path"] or ""))
    plan.skipped.sort(key=lambda r: r["path"])
    return plan
