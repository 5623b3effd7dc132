"""One evaluation unit: a checkpoint on a benchmark under a setting, written as one Parquet file.

The unit's identity is a hash of everything that determines its predictions (:func:`unit_id`):
the checkpoint's files (content, not path), the benchmark's label files, the commit markers of the
shards its media come from, the setting, and the evaluation fields that change outputs (prediction
mode, generation length, judge, model config: the fields not marked as scheduling or whole-run in
:class:`~mosear.evaluate.config.EvalConfig`), the judging rules' version
(:data:`mosear.evaluate.judges.SCORING_VERSION`) and the code a unit runs
(:func:`mosear.identity.code_fingerprint` of :mod:`mosear.evaluate.runner`). Digests come from :mod:`mosear.identity`. The output
``units/{ckpt}__{bench}__{setting}__{id}.parquet`` is written atomically (:mod:`mosear.atomic`), so a
file that exists is complete: a rerun skips it, a killed unit leaves only a hidden temporary that the
next run removes.

Prediction table columns (one row per benchmark item, every item accounted for):
``unit_id, checkpoint, benchmark, setting, ar, ar_fraction, ar_threshold (the values used: a calibrated
setting's chosen ones), drop, key, group (resampling group: shared face/voice source), subset, label, pred_label``
(None: the output parsed to no label in the benchmark's space), ``parsed_label`` (the model's label
before restricting to the space), ``text`` (generated, or None), ``reference``, ``scores`` (log-lik.
per benchmark label, or None), ``share_audio, share_visual, share_text`` (attention shares, or None),
``pred_emotions, ref_emotions`` (synonym groups), ``ov_precision, ov_recall`` (open-vocabulary set
metric per item, None without a reference), ``clue_overlap, label_overlap`` (EMER, None elsewhere),
``ref_source`` (where the reference set came from: ``label`` (label + open-vocabulary labels) or
``text`` (reasoning-only items)), ``judge_error`` (the judge's reply could not be read: not scored),
``error`` (why the item could not be evaluated, e.g. its sample is in no shard; None when it was),
``origin`` (mined: natural | human-rated | spliced), ``face_label, voice_label`` (a splice's two cues: its
``label`` is None and it is scored for preference; :mod:`mosear.evaluate.items`).

**Settings that cannot run** (:func:`plan_units`): a calibrated setting whose calibration split cannot
calibrate (the mining summary's ``cannot_run`` names it, or the split has an empty subset) is skipped on
that benchmark, with the reason in ``bench.notes["skipped"]`` (``protocol.json``, the report and the
terminal say it), instead of failing after training; a config that asks for such settings alone is an
error (exit 2).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mosear.atomic import atomic_write_parquet
from mosear.config import output_fields
from mosear.evaluate.benchmark_files import Benchmark, load_benchmark
from mosear.evaluate.config import BenchmarkSpec, EvalConfig, SettingSpec
from mosear.identity import DigestMemo, code_fingerprint, digest_paths, file_digest, model_paths, shard_folder_digest

log = logging.getLogger(__name__)

__all__ = ["UnitSpec", "cannot_run", "describe_plan", "describe_setting", "checkpoint_names", "fingerprint_checkpoint", "fingerprint_benchmark",
           "plan_units", "unit_path", "write_table", "PREDICTION_SCHEMA"]

PREDICTION_SCHEMA = pa.schema([
    ("unit_id", pa.string()), ("checkpoint", pa.string()), ("benchmark", pa.string()), ("setting", pa.string()),
    ("ar", pa.bool_()), ("ar_fraction", pa.float64()), ("ar_threshold", pa.float64()), ("drop", pa.string()),
    ("key", pa.string()), ("group", pa.string()), ("subset", pa.string()), ("label", pa.string()), ("pred_label", pa.string()),
    ("parsed_label", pa.string()), ("text", pa.string()), ("reference", pa.string()),
    ("scores", pa.list_(pa.float32())), ("labels", pa.list_(pa.string())),
    ("share_audio", pa.float64()), ("share_visual", pa.float64()), ("share_text", pa.float64()),
    ("pred_emotions", pa.list_(pa.string())), ("ref_emotions", pa.list_(pa.string())),
    ("ov_precision", pa.float64()), ("ov_recall", pa.float64()),
    ("clue_overlap", pa.float64()), ("label_overlap", pa.float64()),
    ("ref_source", pa.string()), ("judge_error", pa.string()),
    ("error", pa.string()),
    ("origin", pa.string()), ("face_label", pa.string()), ("voice_label", pa.string()),
])


@dataclass(frozen=True)
class UnitSpec:
    checkpoint_name: str
    checkpoint: str            # adapter folder, or "base"
    benchmark: BenchmarkSpec
    setting: SettingSpec
    unit_id: str
    checkpoint_fp: str = ""    # content hash of the checkpoint (keys the per-worker model cache)

    @property
    def filename(self) -> str:
        return f"{self.checkpoint_name}__{self.benchmark.name}__{self.setting.name}__{self.unit_id}.parquet"


def checkpoint_names(checkpoints: list[str]) -> list[tuple[str, str]]:
    """``[(name, path)]``: ``name=path`` entries keep their name, ``runs/x/adapter`` is called ``x``."""
    out: list[tuple[str, str]] = []
    for entry in checkpoints:
        if "=" in entry:
            name, path = entry.split("=", 1)
        elif entry in ("base", "endpoint"):
            name, path = entry, entry
        else:
            p = Path(entry)
            name = p.parent.name if p.name == "adapter" and p.parent.name else p.name
            path = entry
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip()) or "checkpoint"
        if name in [n for n, _ in out]:
            name = f"{name}-{len(out)}"
        out.append((name, path))
    return out


def fingerprint_checkpoint(path: str, model_cfg: dict[str, Any], memo: DigestMemo | None = None) -> str:
    """Content digest of an adapter folder (every file's bytes), or of the model config for ``base``; plus
    the bytes of the local base-model folders the model config names (``base``) or the adapter's recorded
    ``model_config.json`` names (:func:`mosear.identity.model_paths`): weights replaced under the same
    path change the unit's id."""
    h = hashlib.sha256(json.dumps(model_cfg, sort_keys=True, default=str).encode())
    models = model_paths(model_cfg) if path == "base" else []
    if path not in ("base", "endpoint"):
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"checkpoint {path}: not a folder (expected training's {{output}}/adapter)")
        h.update(digest_paths([root], memo).encode())
        try:
            models = model_paths(json.loads((root / "model_config.json").read_text()))
        except (OSError, ValueError):  # load_model reports a missing or bad config for that unit
            models = []
    for m in models:
        h.update(f"{m}\0{digest_paths([m], memo)}\0".encode())
    return h.hexdigest()[:16]


def fingerprint_benchmark(bench: Benchmark, memo: DigestMemo | None = None) -> str:
    """Digest of the benchmark's spec (minus its name and paths), its label files' bytes and the content
    of its shards (their recorded ``tar_sha256``: a shard rebuilt with other frames changes it)."""
    spec = bench.spec.model_dump(mode="json", exclude={"name", "path", "shards"})
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for f in sorted(bench.files):
        h.update(f"{Path(f).name}\0{file_digest(f, memo)}\0".encode())
    if bench.calibration is not None:  # a calibrated setting's choice depends on its split's files too
        for f in sorted(bench.calibration.files):
            h.update(f"{Path(f).relative_to(bench.spec.path) if Path(f).is_relative_to(bench.spec.path) else Path(f).name}\0"
                     f"{file_digest(f, memo)}\0".encode())
    for d in bench.shard_dirs:
        h.update(shard_folder_digest(d).encode())
    return h.hexdigest()[:16]


def _endpoint_identity(cfg: EvalConfig) -> dict[str, Any]:
    """What decides an endpoint's answers (not how long it waits or how often it retries)."""
    if cfg.endpoint is None:
        raise ValueError("checkpoint 'endpoint' needs an endpoint: section (base_url, model, ...)")
    return cfg.endpoint.model_dump(mode="json", exclude={"timeout_s", "retries", "backoff_s", "preflight",
                                                         "api_key_env"})


def plan_units(cfg: EvalConfig, memo: DigestMemo | None = None) -> tuple[list[UnitSpec], dict[str, Benchmark]]:
    """Every unit of ``cfg`` with its id; benchmarks are read (and validated) here, once."""
    import mosear
    from mosear.evaluate import judges

    from mosear.evaluate.items import annotate

    benches = {b.name: annotate(load_benchmark(b)) for b in cfg.benchmarks}
    calibrating = [s.name for s in cfg.all_settings() if s.calibrate]
    if calibrating:
        for b in benches.values():
            _attach_calibration(cfg, b, calibrating)
    for b in benches.values():
        if not b.shard_dirs:
            raise FileNotFoundError(f"benchmark {b.name}: no shard folder holds its media (set benchmarks[].shards)")
    bench_fp = {n: fingerprint_benchmark(b, memo) for n, b in benches.items()}
    outputs = output_fields(cfg, per_unit=True)  # the eval fields a unit's predictions depend on
    if calibrating:
        outputs["calibration"] = cfg.calibration.model_dump(mode="json")
    code = code_fingerprint("mosear.evaluate.runner")["digest"]  # a fixed bug in what a unit runs redoes it
    units = []
    for name, path in checkpoint_names(cfg.checkpoints):
        ck_fp = fingerprint_checkpoint(path, _endpoint_identity(cfg) if path == "endpoint" else cfg.model, memo)
        for b in cfg.benchmarks:
            for s in cfg.all_settings():
                if s.name in benches[b.name].notes.get("skipped", {}):
                    continue
                payload = {"checkpoint": ck_fp, "benchmark": bench_fp[b.name], "setting": s.model_dump(mode="json", exclude={"name"}),
                           "eval": outputs, "version": getattr(mosear, "__version__", "0"), "code": code,
                           "scoring": judges.SCORING_VERSION}
                uid = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
                units.append(UnitSpec(name, path, b, s, uid, ck_fp))
    return units, benches


def cannot_run(bench: Benchmark) -> list[dict[str, str]]:
    """The mining summary's ``cannot_run`` entries (``{setting, split, reason}``) for a mined benchmark
    (``{path}/summary.json``); empty for other formats or without a summary."""
    path = Path(bench.spec.path) / "summary.json"
    if bench.spec.format != "mined" or not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text()).get("cannot_run") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [e for e in entries if isinstance(e, dict) and e.get("setting")]


def _attach_calibration(cfg: EvalConfig, bench: Benchmark, calibrating: list[str]) -> None:
    """Load ``bench``'s calibration split, or mark its calibrated settings skipped with the reason: the
    mining summary says they cannot run on that split, or the split cannot calibrate (a subset empty, no
    such split). Raises when the config asks for nothing but calibrated settings (the user's request
    cannot be met at all: an error, exit 2)."""
    from mosear.evaluate.benchmark_files import CAMER_SUBSETS, BenchmarkFormatError, load_calibration_split
    from mosear.evaluate.items import annotate

    split = cfg.calibration.split
    told = [e for e in cannot_run(bench) if e.get("split") in (None, split)
            and (e["setting"] in calibrating or e["setting"] == "ar_calibrated")]
    reason = (f"the mining summary says it cannot run on the {split} split: {told[0].get('reason', '')}".rstrip(": ")
              if told else None)
    if reason is None:
        try:
            cal = annotate(load_calibration_split(bench.spec, split, calibrating[0]))
            counts = {s: sum(1 for it in cal.items if it.subset == s and it.label) for s in CAMER_SUBSETS}
            if all(counts.values()):
                bench.calibration = cal
                return
            reason = (f"setting {calibrating[0]} calibrates AR on the {split} split of benchmark {bench.name}, whose "
                      f"subsets hold {counts} items with a truth (splices have none), so the rule cannot be applied")
        except BenchmarkFormatError as exc:
            reason = str(exc)
    alone = all(s.calibrate for s in cfg.all_settings())
    if alone:
        if told:
            raise BenchmarkFormatError(f"setting {calibrating[0]} on benchmark {bench.name}: {reason}")
        raise BenchmarkFormatError(reason)
    log.warning("benchmark %s: skipping setting(s) %s: %s", bench.name, ", ".join(calibrating), reason)
    bench.notes["skipped"] = {s: reason for s in calibrating}


def describe_setting(s: SettingSpec) -> str:
    """A setting in words (the report's "what was evaluated")."""
    if s.drop:
        what = f"{'audio' if s.drop == 'audio' else 'video'} removed"
    elif s.calibrate:
        what = "AR chosen on validation"
    elif s.ar:
        what = "AR" + "".join(f" {k} {v}" for k, v in (("fraction", s.ar_fraction), ("threshold", s.ar_threshold),
                                                      ("share", s.ar_share), ("direction", s.ar_direction)) if v is not None)
    else:
        what = "AR off"
    return f"{s.name} ({what})"


def describe_plan(cfg: EvalConfig, benches: dict[str, Benchmark]) -> dict[str, Any]:
    """What this evaluation covers, for ``protocol.json``'s ``evaluated`` (the report and the terminal say it):
    checkpoints, settings in words, per benchmark its split, item counts per subset and origin, its people,
    how intervals resample, settings skipped with their reasons, and the mining summary's other warnings."""
    out: dict[str, Any] = {"checkpoints": dict(checkpoint_names(cfg.checkpoints)),
                           "settings": [describe_setting(s) for s in cfg.all_settings()], "benchmarks": {}}
    from collections import Counter

    for name, b in benches.items():
        notes = b.notes
        calibrating = {s.name for s in cfg.all_settings() if s.calibrate}
        other = [e for e in cannot_run(b) if not (e.get("split") in (None, cfg.calibration.split)
                                                   and (e["setting"] in calibrating or e["setting"] == "ar_calibrated"))]
        out["benchmarks"][name] = {
            "format": b.spec.format, "path": b.spec.path, "split": b.spec.split or ("test" if b.spec.format == "mined" else None),
            "items": len(b.items), "subsets": dict(Counter(it.subset or "none" for it in b.items)),
            "origins": notes.get("origins") or {}, "people": notes.get("people") or [],
            "resampled_by": notes.get("resampled_by", "items"), "moved_splices": notes.get("moved_splices", 0),
            "skipped": notes.get("skipped") or {},
            "warnings": [f"{e['setting']} cannot run on the {e.get('split', '?')} split: {e.get('reason', '')}" for e in other],
        }
    return out


def unit_path(output: str | Path, unit: UnitSpec) -> Path:
    return Path(output) / "units" / unit.filename


def write_table(rows: list[dict[str, Any]], dest: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write prediction rows atomically (:mod:`mosear.atomic`) with ``metadata`` in the schema."""
    table = pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)
    if metadata:
        table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    return atomic_write_parquet(dest, table)
