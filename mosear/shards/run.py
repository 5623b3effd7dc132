"""``run_shard``: the shard stage as a Ray job (local Ray by default, a cluster given an address).

Flow: plan (driver, metadata only) -> check the output folder (refuse another config's output) ->
skip shards whose commit marker records this config *and* these clip digests (:mod:`mosear.identity`; a
memo beside the output saves re-reading unchanged files) -> one Ray task per missing shard, ``workers``
in flight (decode each clip once with PyAV, write the tar with :class:`~mosear.shards.writer.ShardWriter`)
-> ``quarantine.parquet``, ``run.json`` and, last, ``commit.json`` (the stage's marker: its identity and
totals).

An error is never a result (:mod:`mosear.item_errors`): a clip that cannot be decoded
(:class:`~mosear.media.decode.MediaError`) is quarantined with its reason; any other exception while
building a shard (a bug, an OS error) fails that shard, which is not committed. A shard task that fails
leaves the stage failed (:class:`~mosear.orchestrate.errors.StageFailedError`, exit 1) with the count and first reasons,
after the other shards are committed; ``allow_partial=true`` commits the rest with status ``partial``
and names the missing shards.

Every input is accounted for: ``inputs = written + quarantined + skipped`` (skipped: files of a clip
folder that are not clips, e.g. audio-only files, listed in ``run.json``); quarantine rows come from the plan
(bad names, paths outside the root, duplicate keys) and from the shards' index rows with
``status == "failed"`` (missing, unreadable, empty, corrupt, no video, no audio, truncated, ...).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mosear.atomic import atomic_write_json, atomic_write_parquet, remove_stale_temps
from mosear.item_errors import check_error_fraction
from mosear.identity import DigestMemo, code_fingerprint, default_memo, digest_json, safe_digest, stage_identity, write_marker
from mosear.orchestrate.errors import RefusedResumeError, StageFailedError
from mosear.shards.config import ShardConfig
from mosear.shards.plan import CorpusPlan, ShardPlan, plan_corpus, quarantine_row
from mosear.shards.spec import SPEC

__all__ = ["run_shard", "ShardResult", "OutputConflictError", "build_shard", "QUARANTINE_SCHEMA"]

log = logging.getLogger(__name__)

QUARANTINE_SCHEMA = pa.schema([
    ("key", pa.string()), ("dataset", pa.string()), ("clip_id", pa.string()), ("split", pa.string()),
    ("source", pa.string()), ("path", pa.string()), ("label", pa.string()),
    ("reason", pa.string()), ("error", pa.string()), ("stage", pa.string()),
])


class OutputConflictError(RefusedResumeError):
    """The output folder holds shards of another config: stop rather than mix outputs (exit 3)."""


@dataclass
class ShardResult:
    output: Path
    config_hash: str
    inputs: int
    written: int
    quarantined: int
    shards: int
    shards_skipped: int  # already committed by an earlier (interrupted) run
    media_seconds: float
    wall_s: float
    failures: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # files of clip folders that are not clips (audio-only, unknown extension, hidden)
    skipped_report: dict[str, Any] = field(default_factory=dict)  # CorpusPlan.skipped_report()
    warned: int = 0  # samples written whose decode reported libav warnings
    warning_messages: int = 0
    missing: int = 0  # inputs in shards that failed (allow_partial only)
    failed_shards: dict[str, str] = field(default_factory=dict)  # shard -> error (allow_partial only)
    coverage: str | None = None  # "N of M label rows have a clip" (label-file sources; CorpusPlan.coverage_line)

    @property
    def clips_per_s(self) -> float:
        return (self.written + self.quarantined) / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        fails = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        lines = f"mosear shard: {self.inputs} inputs = {self.written} written + {self.quarantined} quarantined " \
                f"({fails}) + {self.skipped} skipped"
        if self.failed_shards:
            lines += (f" + {self.missing} MISSING in {len(self.failed_shards)} failed shard(s) "
                      f"({', '.join(list(self.failed_shards)[:3])})")
        lines += "\n"
        if self.coverage:
            missing = self.failures.get("missing", 0)
            lines += f"  {self.coverage}" + (f"; {missing} missing (quarantine.parquet says where each was looked for)"
                                             if missing else "") + "\n"
        if self.skipped:
            rep = self.skipped_report
            reasons = ", ".join(f"{k}: {v}" for k, v in rep.get("by_reason", {}).items())
            more = f", ... ({self.skipped - len(rep['first'])} more in run.json)" if self.skipped > len(rep["first"]) else ""
            lines += f"  skipped ({reasons}): {', '.join(rep['first'])}{more}\n"
        if self.warned:
            lines += (f"  {self.warned} written with decoder warnings ({self.warning_messages} messages; "
                      f"the index's `warnings` column has them)\n")
        return (
            lines
            + f"  {self.shards} shards ({self.shards_skipped} reused) in {self.output}\n"
            f"  media {self.media_seconds / 3600:.3f} h ({self.media_seconds:.1f} s), wall {self.wall_s:.1f} s, "
            f"{self.clips_per_s:.2f} clips/s, {self.media_seconds / max(self.wall_s, 1e-9):.1f} media-s/s"
        )


# ---------------------------------------------------------------------------------------------
# worker side: one shard
def _clip_meta(clip: dict[str, Any], decoded) -> dict[str, Any]:
    p = decoded.probe
    return {
        "key": f"{clip['dataset']}__{clip['clip_id']}",
        "dataset": clip["dataset"], "clip_id": clip["clip_id"], "split": clip["split"],
        "label": clip["label"], "orig_label": clip["orig_label"], "speaker": clip["speaker"],
        "transcript": clip["transcript"], "source": clip["source"],
        "duration_s": round(float(decoded.duration_s), 6), "fps": p.fps, "width": p.width, "height": p.height,
        "num_frames": int(decoded.frames.shape[0]), "frame_times_s": decoded.frame_times_s,
        "has_audio": decoded.has_audio, "sample_rate": decoded.sample_rate,
        "rotation": p.rotation, "mirrored": p.mirrored,
        "num_warnings": decoded.num_warnings, "warnings": decoded.warnings,
        "source_sha256": clip.get("sha256"),  # the clip file's bytes: its identity across datasets
        "codecs": {"container": p.container, "video": p.video_codec, "audio": p.audio_codec,
                   "audio_rate": p.audio_rate, "audio_channels": p.audio_channels},
        "extra": clip.get("extra") or {},
    }


_FAIL_FIELDS = ("dataset", "clip_id", "split", "label", "orig_label", "speaker", "source")


def build_shard(plan: ShardPlan, cfg: ShardConfig, out_dir: Path, config_hash: str,
                inputs_digest: str | None = None, code: str | None = None) -> dict[str, Any]:
    """Decode every clip of ``plan`` and commit the shard; returns its stats dict.

    ``inputs_digest`` (:func:`clips_digest` of the plan's clips) is recorded in the commit marker, so a
    later run rebuilds the shard exactly when a clip's bytes changed; ``code`` (the driver's
    :func:`shard_code`) likewise when the stage's source changed.
    """
    from mosear.media.decode import MediaError, decode_clip
    from mosear.media.splice import SPLICE_FORMAT, decode_splice, ffmpeg_version
    from mosear.shards.writer import ShardSample, ShardWriter

    cpu0 = time.process_time()
    extra = {k: v for k, v in (("inputs_digest", inputs_digest), ("code", code)) if v} or None
    decode = {"num_frames": cfg.num_frames, "height": cfg.height, "width": cfg.width, "resize": cfg.resize,
              "sample_rate": cfg.sample_rate, "threads": cfg.decode_threads,
              "missing_audio": "silence" if cfg.missing_audio == "silence" else "error"}
    splices = 0
    with ShardWriter(out_dir, plan.split, plan.index, config_hash, extra_stats=extra) as writer:
        for clip in plan.clips:
            key = f"{clip['dataset']}__{clip['clip_id']}"
            fail_meta = {k: clip.get(k) for k in _FAIL_FIELDS}
            try:
                extra = {}
                if clip.get("voice"):  # a counterfactual face/voice pair: mux, then the same decoder
                    decoded, spliced = decode_splice(clip["path"], clip["voice"], float(clip["extra"]["offset_s"]),
                                                     keep=cfg.passthrough, **decode)
                    splices += 1
                    if spliced is not None:
                        extra["mov"] = spliced
                else:
                    decoded = decode_clip(clip["path"], **decode)
                    if cfg.passthrough:
                        ext = Path(clip["path"]).suffix.lower().lstrip(".") or "bin"
                        extra[ext] = Path(clip["path"]).read_bytes()
            except MediaError as exc:  # a data error of this clip: quarantined with its reason
                writer.fail(key, exc.reason, exc.message, fail_meta)
                continue
            # Any other exception (a bug in the decoder, the disk, memory) is not the clip's fault: it leaves
            # the writer, which drops the partial shard, and fails the shard, so a rerun after the fix builds it.
            writer.write(ShardSample(key, decoded.frames, decoded.audio, decoded.sample_rate,
                                     _clip_meta(clip, decoded), extra))
            del decoded, extra  # hold one clip at a time
        if splices:  # what made the spliced clips, for a rebuild elsewhere
            writer.extra_stats.update(splice_format=SPLICE_FORMAT, ffmpeg=ffmpeg_version())
        writer.extra_stats["worker_peak_rss_mb"] = _peak_rss_mb()
        writer.extra_stats["worker_rss_mb"] = _rss_mb()  # at the shard's end: the trend over a run
        writer.extra_stats["worker_cpu_s"] = round(time.process_time() - cpu0, 3)  # this shard's CPU time
        return writer.close()


def _status_mb(field: str) -> float | None:
    """``field`` of /proc/self/status (``VmRSS``, ``VmHWM``) in MB; None where there is no such file."""
    try:
        with open("/proc/self/status") as fh:
            return round(next(int(ln.split()[1]) for ln in fh if ln.startswith(field + ":")) / 1024, 1)
    except (OSError, StopIteration, ValueError):
        return None


def _rss_mb() -> float | None:
    """Resident memory of this process now, MB (Linux VmRSS; None elsewhere)."""
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """Peak resident memory of this (worker) process so far, MB (Linux: VmHWM, which starts at the
    process's exec; ``ru_maxrss`` also counts the memory of the process it was forked from)."""
    import resource

    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _ray_build(plan: dict[str, Any], cfg_json: str, out_dir: str, config_hash: str) -> dict[str, Any]:
    """The Ray task: one shard (``plan``: split, index, clips) -> its stats dict."""
    cfg = ShardConfig.model_validate_json(cfg_json)
    shard = ShardPlan(plan["split"], plan["index"], plan["clips"])
    try:
        return build_shard(shard, cfg, Path(out_dir), config_hash, plan.get("inputs_digest"), plan.get("code"))
    except Exception as exc:  # noqa: BLE001 - the shard is not committed; the driver decides (policy)
        import traceback

        return {"shard": shard.name, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-2000:], "clips": len(shard.clips)}


def clips_digest(shard: ShardPlan, memo: DigestMemo) -> str:
    """Digest of a planned shard's inputs: each clip's key, source path and the digest of its bytes; a
    splice adds its voice's path and digest and the splice recipe (:data:`mosear.media.splice.SPLICE_FORMAT`)."""
    from mosear.media.splice import SPLICE_FORMAT

    def entry(c: dict[str, Any]) -> list[str]:
        row = [c["dataset"] + "__" + c["clip_id"], str(c["path"]), safe_digest(c["path"], memo)]
        if c.get("voice"):
            row += [str(c["voice"]), safe_digest(c["voice"], memo), SPLICE_FORMAT]
        return row

    return digest_json([entry(c) for c in shard.clips])


# ---------------------------------------------------------------------------------------------
# driver side
def _versions() -> dict[str, str]:
    import av
    import numpy
    import ray

    from mosear import __version__ as mosear_version

    return {"mosear": mosear_version, "python": sys.version.split()[0], "av": av.__version__,
            "libavformat": ".".join(map(str, av.library_versions.get("libavformat", ()))),
            "ray": ray.__version__, "pyarrow": pa.__version__, "numpy": numpy.__version__}


def shard_code() -> str:
    """The code fingerprint a shard records (:func:`mosear.identity.code_fingerprint` of this module): a
    shard built by other decode/write code is rebuilt."""
    return code_fingerprint("mosear.shards.run")["digest"]


def _committed(out: Path, shard: ShardPlan, config_hash: str, inputs_digest: str) -> bool:
    """True when the shard's commit marker matches this config, plan and clip contents (and its tar is whole)."""
    stats_p = out / f"{shard.name}.stats.json"
    tar = out / f"{shard.name}.tar"
    if not stats_p.is_file():
        return False
    stats = json.loads(stats_p.read_text())
    if stats.get("config_hash") != config_hash:
        raise OutputConflictError(
            f"{stats_p} was written by config {stats.get('config_hash')}, this run's config is {config_hash}")
    if stats.get("keys_digest") != shard.digest:
        log.warning("%s: the corpus changed since it was written; rebuilding it", shard.name)
        return False
    if stats.get("inputs_digest") != inputs_digest:
        log.warning("%s: the content of its clips changed since it was written; rebuilding it", shard.name)
        return False
    if stats.get("code") != shard_code():
        log.warning("%s: written by other mosear code (the shard stage's source changed); rebuilding it", shard.name)
        return False
    index = out / f"{shard.name}.index.parquet"
    return tar.is_file() and tar.stat().st_size == stats.get("tar_bytes") and index.is_file()


def _prepare_output(cfg: ShardConfig, config_hash: str) -> None:
    out = Path(cfg.output)
    run_json = out / "run.json"
    if run_json.is_file():
        old = json.loads(run_json.read_text()).get("config_hash")
        if old != config_hash:
            if not cfg.overwrite:
                raise OutputConflictError(
                    f"{out} holds shards of config {old}; this config is {config_hash}. Refusing to resume into "
                    f"it: choose another output, or set overwrite=true to delete it")
            log.warning("overwrite=true: deleting %s (config %s)", out, old)
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # partial files of a killed run


def _write_run_json(out: Path, payload: dict[str, Any]) -> None:
    atomic_write_json(out / "run.json", payload, indent=1, sort_keys=True)


def _collect_quarantine(out: Path, plan: CorpusPlan, shards: list[ShardPlan]) -> list[dict[str, Any]]:
    rows = list(plan.quarantine)
    by_key = {c["dataset"] + "__" + c["clip_id"]: c for s in plan.shards for c in s.clips}
    for s in shards:
        index = pq.read_table(out / f"{s.name}.index.parquet", columns=["key", "status", "reason", "error"])
        for r in index.filter(pa.compute.equal(index["status"], "failed")).to_pylist():
            rows.append(quarantine_row(by_key[r["key"]], r["reason"], r["error"], "decode"))
    rows.sort(key=lambda r: (r["key"], r["reason"], r["path"] or ""))
    return rows


def _in_flight(workers: int, cpus: int) -> int:
    """Shard tasks to keep submitted. Ray runs at most ``cpus`` of them at once (one CPU each). When
    ``workers`` asks for all of them, one more task per worker waits in Ray's queue, so a worker that
    commits a shard starts the next without waiting for the driver's round trip; when ``workers`` is
    fewer than the CPUs, exactly ``workers`` are submitted (nothing else would hold the limit)."""
    return workers + min(workers, cpus) if workers >= cpus else workers


def run_shard(cfg: ShardConfig) -> ShardResult:
    """Run (or resume) the shard stage; see the module docstring. Raises OutputConflictError, ConfigError."""
    from tqdm.auto import tqdm

    from mosear.ray_utils import init_ray, wait_one

    t0 = time.time()
    config_hash = cfg.shard_hash()
    out = Path(cfg.output)
    plan = plan_corpus(cfg)
    _prepare_output(cfg, config_hash)
    (out / "commit.json").unlink(missing_ok=True)  # a run in progress is not a complete output
    memo = default_memo(out)
    identity = stage_identity(SPEC, cfg, memo)
    digests = {s.name: clips_digest(s, memo) for s in plan.shards}
    for s in plan.shards:  # the memo has every clip's digest now: into the index (the protocol compares them)
        for c in s.clips:
            c["sha256"] = None if c.get("voice") else safe_digest(c["path"], memo)
    memo.save()
    pending = [s for s in plan.shards if not _committed(out, s, config_hash, digests[s.name])]
    planned_names = {s.name for s in plan.shards}
    for stale in out.glob("*.stats.json"):  # shards of this config that the corpus no longer has
        name = stale.name[: -len(".stats.json")]
        if name not in planned_names:
            log.warning("%s is not in the plan any more (corpus shrank); removing it", name)
            for suffix in (".stats.json", ".tar", ".index.parquet"):
                (out / f"{name}{suffix}").unlink(missing_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run_info = {"config": cfg.model_dump(mode="json"), "config_hash": config_hash, "versions": _versions(),
                "started_at": started, "status": "running"}
    _write_run_json(out, run_info)

    shard_errors: dict[str, str] = {}
    n_clips = sum(len(s.clips) for s in plan.shards)
    done_clips = n_clips - sum(len(s.clips) for s in pending)
    log.info("%d inputs, %d shards planned, %d to build, %d reused", plan.inputs, len(plan.shards),
             len(pending), len(plan.shards) - len(pending))
    if pending:
        ray = init_ray(cfg.ray_address)
        cpus = max(1, int(ray.available_resources().get("CPU", 1)))
        workers = cfg.workers or cpus
        in_flight = _in_flight(workers, cpus)
        # One plain Ray task per shard (Ray Data's executor cost ~1 s of imports and scheduling per run
        # for the same tasks: docs/shard.md, profile).
        build = ray.remote(num_cpus=1)(_ray_build)
        # workers get the resolved sources, not the corpus file (its path may not exist there)
        args = (cfg.model_copy(update={"corpus": None}).model_dump_json(), str(out.resolve()), config_hash)
        bar = tqdm(total=n_clips, initial=done_clips, unit="clip", desc="shard", disable=not cfg.progress,
                   file=sys.stderr, dynamic_ncols=True)
        todo, running, failed = list(reversed(pending)), [], 0
        while todo or running:
            while todo and len(running) < in_flight:
                s = todo.pop()
                running.append(build.remote({"split": s.split, "index": s.index, "clips": s.clips,
                                             "inputs_digest": digests[s.name], "code": shard_code()}, *args))
            ready, running = wait_one(running)  # interruptible by Ctrl-C (ray_utils.wait_one)
            stats = ray.get(ready[0])
            if "error" in stats:  # the whole shard failed: nothing of it is committed
                log.error("shard %s failed: %s", stats["shard"], stats["error"])
                shard_errors[stats["shard"]] = stats["error"]
                bar.update(stats["clips"])
                continue
            failed += stats["num_failed"]
            bar.update(stats["num_samples"] + stats["num_failed"])
            bar.set_postfix(shards=stats["shard"], failed=failed, refresh=False)
        bar.close()

    if shard_errors and not cfg.allow_partial:
        raise StageFailedError("mosear shard", len(shard_errors), len(plan.shards), shard_errors,
                               hint=" shards; the others are committed and a rerun builds only the failed ones"
                               " (allow_partial=true commits without them)")
    done = [s for s in plan.shards if s.name not in shard_errors]
    quarantine = _collect_quarantine(out, plan, done)
    atomic_write_parquet(out / "quarantine.parquet", pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA))
    written = media = 0.0
    warned = messages = 0
    for s in done:
        stats = json.loads((out / f"{s.name}.stats.json").read_text())
        written += stats["num_samples"]
        media += stats["media_seconds"]
        warned += stats.get("warnings", {}).get("samples", 0)
        messages += stats.get("warnings", {}).get("messages", 0)
    failures: dict[str, int] = {}
    for r in quarantine:
        failures[r["reason"]] = failures.get(r["reason"], 0) + 1
    result = ShardResult(
        output=out, config_hash=config_hash, inputs=plan.inputs, written=int(written), quarantined=len(quarantine),
        shards=len(plan.shards), shards_skipped=len(plan.shards) - len(pending), media_seconds=media,
        wall_s=time.time() - t0, failures=failures, skipped=len(plan.skipped), skipped_report=plan.skipped_report(),
        warned=warned, warning_messages=messages,
        missing=sum(len(s.clips) for s in plan.shards if s.name in shard_errors), failed_shards=shard_errors,
        coverage=plan.coverage_line(),
    )
    if result.inputs != result.written + result.quarantined + result.skipped + result.missing:  # never lose an input
        raise RuntimeError(f"accounting error: {result.inputs} inputs != {result.written} + {result.quarantined} "
                           f"+ {result.skipped} + {result.missing}")
    status = "partial" if shard_errors else "complete"
    totals = {k: v for k, v in asdict(result).items() if k not in ("output", "failed_shards")} | {
        "clips_per_s": round(result.clips_per_s, 3), "media_hours": round(media / 3600, 5)}
    # data errors beyond the bound; a label row whose clip is not there (a partial download, found at plan
    # time and said as "N of M label rows have a clip") is coverage, not an error of an input that was read
    errors = {k: v for k, v in result.failures.items() if k != "missing"}
    if sum(errors.values()) > cfg.max_item_error_fraction * result.inputs:
        run_info.update(status="failed", finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        skipped=plan.skipped_report(first=100), totals=totals, failed_shards=shard_errors)
        _write_run_json(out, run_info)
        first = {f"{r['key']} ({r['reason']})": r["error"] or r["reason"] for r in quarantine[:3]}
        first = {k: v for k, v in first.items() if not k.endswith("(missing)")} or first
        check_error_fraction("mosear shard", errors, result.inputs, cfg.max_item_error_fraction, first)
    run_info.update(status=status, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    skipped=plan.skipped_report(first=100), totals=totals, failed_shards=shard_errors,
                    coverage=plan.coverage)
    _write_run_json(out, run_info)
    write_marker(out, identity, status, totals=totals, missing=sorted(shard_errors), missing_count=len(shard_errors))
    return result
