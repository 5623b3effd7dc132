"""Run one evaluation unit in the current process: load the checkpoint, stream the benchmark's
samples from its shards, predict, judge, write the unit's Parquet file.

Per batch of samples (``batch_size``): apply the setting's modality removal (audio → silence with
``has_audio=False``; video → black frames), ``collate``, then

- ``score_labels(batch, labels=benchmark labels)`` → log-likelihood per label ``[B, C]``; the
  closed-set prediction is the arg-max (``prediction: score``);
- ``generate(batch, max_new_tokens)`` when the benchmark has reference reasoning (or
  ``generate_reasoning: always``, or ``prediction: generate``, where ``parse_label(text)`` is the
  prediction: text with no label in it gives ``pred_label = None``, counted as unparsed);
- under ``monitor`` (or AR) one forward over the prompt alone, whose per-sample attention shares
  (text / visual / audio keys, text query rows) go into ``share_*``.

Every benchmark item gets a row: items whose sample is in no shard get ``error = "sample not in
shards ..."``; a sample whose prediction raises a data error (:class:`mosear.item_errors.ItemError`,
e.g. an endpoint refusing that sample) gets its text as ``error`` (the rest of the batch is retried one
by one so one bad sample does not take the batch with it). Any other exception (a bug, an unreachable
endpoint, a lost GPU) fails the unit: nothing is written for it, so it is never cached as complete.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mosear.evaluate.benchmark_files import Benchmark, BenchmarkItem
from mosear.evaluate.config import EvalConfig, SettingSpec
from mosear.evaluate.judges import Judge, JudgeReplyError, make_judge, reference_set, set_precision_recall
from mosear.evaluate.units import UnitSpec, unit_path, write_table
from mosear.item_errors import ItemError, count_reasons

__all__ = ["run_unit", "load_model", "resolve_device", "apply_drop", "iter_benchmark_samples", "set_unit_attention",
           "ar_variant", "calibration_options"]

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when this process sees a GPU (Ray sets CUDA_VISIBLE_DEVICES per task), else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but this worker sees no GPU (set gpus_per_unit > 0 on a GPU node)")
    return device


def load_model(checkpoint: str, model_overrides: dict[str, Any], device: str = "cpu"):
    """Build the model for ``checkpoint`` in eval mode.

    An adapter folder (``save_adapter`` layout) carries its ``model_config.json``: the model is built
    from it (``model_overrides`` do not apply: ``load_adapter`` refuses another config). ``base`` is
    the model built from ``model_overrides`` without trained weights.
    """
    from mosear.config import load_config
    from mosear.model import ModelConfig, build_model

    if checkpoint == "base":
        mcfg = load_config(ModelConfig, overrides=dict(model_overrides))
    else:
        cfg_file = Path(checkpoint) / "model_config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint}: no model_config.json (not a mosear adapter folder)")
        mcfg = ModelConfig.model_validate(json.loads(cfg_file.read_text()))
    model = build_model(mcfg)
    if checkpoint != "base":
        model.load_adapter(checkpoint)
    model.to(device)
    model.eval()
    return model


def apply_drop(sample: dict[str, Any], drop: str | None) -> dict[str, Any]:
    """A copy of ``sample`` with one modality replaced by its neutral filler (see module docstring);
    precomputed features of that modality become missing (NaN: standardised to the training mean)."""
    if drop is None:
        return sample
    s = dict(sample)
    if s.get("features") is not None:
        s["features"] = {**s["features"], "visual" if drop == "video" else "audio": None}
    meta = dict(s.get("meta") or {})
    if drop == "audio":
        s["audio"] = np.zeros_like(s["audio"])
        meta["has_audio"] = False
    elif drop == "video":
        s["frames"] = np.zeros_like(s["frames"])
    s["meta"] = meta
    return s


def _shards_with(shards: list[Path], wanted: set[str]) -> list[Path]:
    """The shards whose Parquet index (``{shard}.index.parquet``) lists one of ``wanted``; a shard
    without a readable index is kept (read through) rather than risk missing its samples."""
    import pyarrow.parquet as pq

    keep = []
    for tar in shards:
        index = tar.with_name(tar.name[: -len(".tar")] + ".index.parquet")
        try:
            keys = set(pq.read_table(index, columns=["key"]).column("key").to_pylist())
        except Exception:  # noqa: BLE001 - no index: read the shard
            keep.append(tar)
            continue
        if keys & wanted:
            keep.append(tar)
    return keep


def features_of(bench: Benchmark) -> dict[str, dict[str, Any]]:
    """The benchmark's feature table (``features``, or a mined benchmark's ``features.parquet``)."""
    from mosear.model.features import FEATURES_FILE, load_features

    path = bench.spec.features or (str(Path(bench.spec.path) / FEATURES_FILE) if bench.spec.format == "mined" else None)
    if path is None:
        raise FileNotFoundError(f"benchmark {bench.name}: the checkpoint reads precomputed features "
                                "(model.inputs=features); set benchmarks[].features to a feature table")
    return load_features(path)[0]


def with_features(samples: Iterator[dict[str, Any]], table: dict[str, dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    """Attach each sample's features (``None`` when the table lacks its key: the collate error names it)."""
    for s in samples:
        yield s if table is None else {**s, "features": table.get(s["key"])}


def iter_benchmark_samples(bench: Benchmark) -> Iterator[dict[str, Any]]:
    """Stream the samples of the benchmark's keys from its shard folders (others are skipped).

    Only shards whose index lists a wanted key are opened, so a small benchmark over a large corpus
    reads a few shards, not the corpus.
    """
    from mosear.shards.reader import iter_samples, list_shards

    wanted = {it.key for it in bench.items}
    for d in bench.shard_dirs:
        shards = list_shards(d)
        if not shards:
            log.warning("benchmark %s: no committed shards in %s", bench.name, d)
            continue
        shards = _shards_with(shards, wanted)
        if not shards:
            continue
        for sample in iter_samples(shards):
            if sample["key"] in wanted:
                wanted.discard(sample["key"])
                yield sample
                if not wanted:
                    return


def set_unit_attention(model, setting: SettingSpec):
    """Switch ``model`` to the attention ``setting`` asks for; returns the AR/monitor controller or None.

    AR uses the setting's fraction / threshold / share / direction where given, else the model config's
    ``ar`` values (layers, heads and query rows always come from the model config): a model configured with
    ``share: token, direction: both`` is evaluated with them (:func:`ar_variant`).
    """
    from mosear.model import set_attention_mode

    ar = model.cfg.ar
    if setting.ar:
        return set_attention_mode(
            model, "ar",
            threshold=ar.threshold if setting.ar_threshold is None else setting.ar_threshold,
            fraction=ar.fraction if setting.ar_fraction is None else setting.ar_fraction,
            layers=ar.layers, heads=ar.heads, queries=ar.queries, **ar_variant(model, setting),
        )
    if setting.monitor:
        return set_attention_mode(model, "monitor", layers=ar.layers, heads=ar.heads, queries=ar.queries)
    return set_attention_mode(model, "sdpa")


def ar_variant(model, setting: SettingSpec) -> dict[str, str]:
    """``{"share", "direction"}`` AR runs with under ``setting``: the setting's, else the model config's."""
    ar = model.cfg.ar
    return {"share": setting.ar_share or getattr(ar, "share", "mass"),
            "direction": setting.ar_direction or getattr(ar, "direction", "audio")}


# The last model loaded in this worker process. Ray reuses worker processes across tasks and units
# are submitted checkpoint by checkpoint, so consecutive units on a worker mostly share a checkpoint:
# keeping one model (never more: bounded memory) saves a load per unit (minutes for a 7B backbone).
# Evaluation never changes weights; each unit sets its own attention mode.
_MODEL_CACHE: dict[tuple, Any] = {}


def cached_model(unit: UnitSpec, model_overrides: dict[str, Any], device: str):
    key = (unit.checkpoint, unit.checkpoint_fp, json.dumps(model_overrides, sort_keys=True, default=str), device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()  # drop the previous model before loading the next
        _MODEL_CACHE[key] = load_model(unit.checkpoint, model_overrides, device)
    return _MODEL_CACHE[key]


def calibrate_unit(model, bench: Benchmark, cfg: EvalConfig) -> dict[str, Any]:
    """Choose AR's threshold and fraction on ``bench.calibration`` (the validation split) with
    :func:`mosear.model.calibrate.calibrate_ar`; returns the choice, the grid table and item counts.

    Validation prompts are collated once (``batch_size`` at a time) and scored under every grid setting.
    """
    import torch

    from mosear.model.calibrate import calibrate_ar

    val = bench.calibration
    if val is None:
        raise ValueError(f"benchmark {bench.name}: no calibration split was loaded (plan_units attaches it)")
    items = {it.key: it for it in val.items if it.label}
    batches, samples = [], []
    seen = 0

    def close() -> None:
        batch = model.collate(samples, include_target=False)
        batches.append((batch, [items[s["key"]].label for s in samples], [items[s["key"]].subset for s in samples]))
        samples.clear()

    table = features_of(val) if model.cfg.inputs == "features" else None
    for sample in with_features(iter_benchmark_samples(val), table):
        if sample["key"] not in items:
            continue
        samples.append(sample)
        seen += 1
        if len(samples) == cfg.batch_size:
            close()
    if samples:
        close()
    if seen < len(items):
        log.warning("calibration split of %s: %d of %d items have no sample in the shards", bench.name,
                    len(items) - seen, len(items))
    ar = model.cfg.ar
    options = calibration_options(model, cfg)
    with torch.inference_mode():
        res = calibrate_ar(model, batches, labels=tuple(val.labels), thresholds=cfg.calibration.thresholds,
                           fractions=cfg.calibration.fractions, layers=ar.layers, heads=ar.heads, options=options)
    counts: dict[str, int] = {}
    for _b, _g, subs in batches:
        for sub in subs:
            counts[sub] = counts.get(sub, 0) + 1
    return {"split": cfg.calibration.split, "threshold": res.threshold, "fraction": res.fraction,
            "share": res.options["share"], "direction": res.options["direction"], "options": options,
            "items": counts, "table": res.table,
            "rule": "highest conflict-mean among settings whose consistent accuracy is within one bootstrap SE "
                    "of the no-AR value (mosear.model.calibrate.choose_setting)"}


def calibration_options(model, cfg: EvalConfig) -> list[dict[str, str]]:
    """The AR variants calibration searches: ``calibration.options`` when the config lists them, else the
    checkpoint's own ``ar.share`` / ``ar.direction`` (never silently ``mass`` / ``audio``)."""
    if cfg.calibration.options:
        return [o.model_dump() for o in cfg.calibration.options]
    ar = model.cfg.ar
    return [{"share": getattr(ar, "share", "mass"), "direction": getattr(ar, "direction", "audio")}]


class _Predictor:
    def __init__(self, cfg: EvalConfig, unit: UnitSpec, bench: Benchmark):
        from mosear.model import parse_label

        self.cfg, self.unit, self.bench = cfg, unit, bench
        self.device = resolve_device(cfg.device)
        if unit.checkpoint_fp:
            self.model = cached_model(unit, cfg.model, self.device)
        else:  # a unit built by hand, without a fingerprint: never reuse
            self.model = load_model(unit.checkpoint, cfg.model, self.device)
        self.setting = unit.setting
        self.calibration: dict[str, Any] | None = None
        if unit.setting.calibrate:  # chosen on validation, applied to the evaluated split
            self.calibration = calibrate_unit(self.model, bench, cfg)
            self.setting = unit.setting.model_copy(update={
                "ar_threshold": float(self.calibration["threshold"]), "ar_fraction": float(self.calibration["fraction"]),
                "ar_share": self.calibration["share"], "ar_direction": self.calibration["direction"]})
        self.controller = set_unit_attention(self.model, self.setting)
        self.parse_label = parse_label
        self.generate = (cfg.prediction == "generate" or cfg.generate_reasoning == "always"
                         or (cfg.generate_reasoning == "auto" and bench.has_references))

    def shares(self, batch: dict[str, Any], n: int) -> list[dict[str, float]]:
        """Per-sample attention shares ``{text, visual, audio}`` of the prompt's text query rows.

        Measured on one forward pass over the prompt alone (label scoring runs B×C continuations,
        whose rows are not per-sample); empty dicts when the setting does not monitor.
        """
        if self.controller is None:
            return [{} for _ in range(n)]
        from mosear.model.modality import MODALITY_NAMES

        self.controller.reset()
        self.model(**batch)
        sh = self.controller.shares()  # [B, 3] in MODALITY_NAMES order
        self.controller.reset()
        return [{name: float(sh[i, j]) for j, name in enumerate(MODALITY_NAMES)} for i in range(n)]

    def predict(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import torch

        labels = list(self.bench.labels)
        with torch.inference_mode():
            batch = self.model.collate(samples, include_target=False)
            shares = self.shares(batch, len(samples))
            scores = self.model.score_labels(batch, labels=tuple(labels)).float().cpu().numpy()  # [B, C]
            texts = (self.model.generate(batch, max_new_tokens=self.cfg.max_new_tokens) if self.generate
                     else [None] * len(samples))
        out = []
        for i in range(len(samples)):
            row: dict[str, Any] = {"scores": scores[i].tolist(), "text": texts[i]}
            if self.cfg.prediction == "generate":
                parsed = self.parse_label(texts[i] or "")
                row["parsed_label"] = parsed
                row["pred_label"] = parsed if parsed in labels else None
            else:
                row["parsed_label"] = row["pred_label"] = labels[int(np.argmax(scores[i]))]
            for m in ("audio", "visual", "text"):
                row[f"share_{m}"] = shares[i].get(m)
            out.append(row)
        return out


def judge_item(judge: Judge, item: BenchmarkItem, text: str | None, rate: bool = False) -> dict[str, Any]:
    """The judged columns of one evaluated item (empty for an item without a reference).

    ``pred_emotions`` (P, from the generated ``text``), ``ref_emotions`` (G, :func:`reference_set`: the
    label and open-vocabulary labels, never reasoning that names a misleading cue), ``ref_source``,
    ``ov_precision, ov_recall`` (None when G is empty), EMER ratings when ``rate``. A judge reply that
    cannot be read gives ``judge_error`` instead of scores: counted, never scored as an empty set.
    """
    if not (item.reference or item.ov_labels):
        return {}
    out: dict[str, Any] = {}
    try:
        p_set = judge.emotions(text)
        g_set, out["ref_source"] = reference_set(judge.table, item.label, item.ov_labels, item.reference, judge)
        out["pred_emotions"], out["ref_emotions"] = sorted(p_set), sorted(g_set)
        if g_set:  # a reference without emotion words cannot be scored; left as None
            out["ov_precision"], out["ov_recall"] = set_precision_recall(p_set, g_set)
        if rate:
            out.update(judge.rate_reasoning(text, item.reference))
    except JudgeReplyError as exc:
        return {"judge_error": str(exc)[:500]}
    return out


def run_unit(cfg: EvalConfig, unit: UnitSpec, bench: Benchmark) -> dict[str, Any]:
    """Evaluate ``unit``; write ``units/<file>.parquet``; return a summary (counts, seconds)."""
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(0)
    if unit.checkpoint == "endpoint":
        from mosear.evaluate.endpoint import EndpointPredictor

        pred = EndpointPredictor(cfg, unit, bench)
    else:
        pred = _Predictor(cfg, unit, bench)
    judge = make_judge(cfg.judge, cache_dir=Path(cfg.output) / "judge_cache")
    items: dict[str, BenchmarkItem] = {it.key: it for it in bench.items}
    results: dict[str, dict[str, Any]] = {}

    def flush(batch: list[dict[str, Any]]) -> None:
        try:
            rows = pred.predict(batch)
        except Exception as exc:  # noqa: BLE001 - find the bad sample(s), keep the rest
            if len(batch) == 1:
                if not isinstance(exc, ItemError):
                    raise  # an environment or code error: the unit fails, nothing of it is cached
                results[batch[0]["key"]] = {"error": f"{exc}"[:1000]}
                return
            for s in batch:
                flush([s])
            return
        for s, r in zip(batch, rows):
            results[s["key"]] = r

    batch: list[dict[str, Any]] = []
    table = features_of(bench) if pred.model.cfg.inputs == "features" else None
    for sample in with_features(iter_benchmark_samples(bench), table):
        batch.append(apply_drop(sample, unit.setting.drop))
        if len(batch) == cfg.batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)

    setting = pred.setting
    ar_cfg = pred.model.cfg.ar
    used_fraction = (setting.ar_fraction if setting.ar_fraction is not None else ar_cfg.fraction) if setting.ar else None
    used_threshold = (setting.ar_threshold if setting.ar_threshold is not None else ar_cfg.threshold) if setting.ar else None
    rows = []
    for key, it in items.items():
        r = results.get(key) or {"error": f"sample not in shards {bench.shard_dirs}"}
        row = {"unit_id": unit.unit_id, "checkpoint": unit.checkpoint_name, "benchmark": bench.name,
               "setting": setting.name, "ar": setting.ar, "ar_fraction": used_fraction, "ar_threshold": used_threshold,
               "drop": setting.drop, "key": key, "group": it.group, "subset": it.subset, "label": it.label, "reference": it.reference,
               "labels": list(bench.labels), "origin": it.origin, "face_label": it.face_label,
               "voice_label": it.voice_label, **r}
        if "error" not in r:
            row.update(judge_item(judge, it, r.get("text"), rate=bench.spec.format == "emer"))
        rows.append(row)
    seconds = time.perf_counter() - t0
    meta = {"unit_id": unit.unit_id, "checkpoint": unit.checkpoint_name, "checkpoint_path": unit.checkpoint,
            "benchmark": bench.name, "format": bench.spec.format, "labels": list(bench.labels),
            "setting": {**setting.model_dump(mode="json"), "ar_fraction": used_fraction, "ar_threshold": used_threshold,
                        **({f"ar_{k}": v for k, v in ar_variant(pred.model, setting).items()}
                           if setting.ar and hasattr(pred, "model") else {})},
            "bench_notes": {k: v for k, v in bench.notes.items() if k != "skipped"},
            "label_scoring": getattr(getattr(pred, "model", None), "label_scoring", None),  # sum | mean log-prob
            "calibration": pred.calibration, "split": bench.spec.split, "seconds": round(seconds, 3),
            "judge": judge.name, "device": pred.device, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(pred.metadata() if hasattr(pred, "metadata") else {})}
    write_table(rows, unit_path(cfg.output, unit), {"mosear.unit": json.dumps(meta)})
    errors = sum(1 for r in rows if r.get("error"))
    unparsed = sum(1 for r in rows if not r.get("error") and r.get("pred_label") is None)
    judge_errors = sum(1 for r in rows if r.get("judge_error"))
    if judge_errors:
        log.warning("%s: %d judge repl%s could not be read (judge_errors); those items are left out of the set "
                    "metric, not scored as empty sets: %s", unit.filename, judge_errors,
                    "y" if judge_errors == 1 else "ies", next(r["judge_error"] for r in rows if r.get("judge_error")))
    reasons = count_reasons([error_reason(r["error"]) for r in rows if r.get("error")]
                            + ["judge_reply"] * judge_errors)
    return {"unit": unit.filename, "items": len(rows), "errors": errors, "unparsed": unparsed,
            "judge_errors": judge_errors, "error_reasons": reasons, "seconds": seconds}


def error_reason(error: str) -> str:
    """The short reason of an item's ``error`` text (what ``run.json`` counts items by)."""
    if error.startswith("sample not in shards"):
        return "sample_not_in_shards"
    if error.startswith("not available"):
        return "not_available"
    if error.startswith("endpoint:"):
        return "endpoint_rejected"
    head = error.split(":", 1)[0].strip()
    return head if head.replace("_", "").isalnum() else "other"
