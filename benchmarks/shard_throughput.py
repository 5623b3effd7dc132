"""Shard throughput: ``mosear shard`` against three floors measured in the same run, at two corpus sizes.

    python benchmarks/shard_throughput.py                    # 200 clips (~2-3 min on a quiet 2-core machine)
    python benchmarks/shard_throughput.py --clips 200 2000   # both sizes (~12 min quiet)
    python benchmarks/shard_throughput.py --clips 200 --approaches libav,mosear --repeats 3
    python benchmarks/shard_throughput.py --approaches libav,mosear --compare /path/to/main-checkout

Corpus: ``N`` real clips from ``../shared/data`` (``MOSEAR_SHARED_DATA`` overrides; the RAVDESS actor-05
AV originals, h264 1280x720 30 fps + AAC 48 kHz stereo; the CREMA-D mp4s and the FLV/VP6 original,
480x360), repeated round robin through symlinks. Every approach produces, per clip, 16 frames at 224x224
(aspect-preserving scale + center crop, RGB) and 16 kHz mono audio, with ``--workers`` processes:

- ``libav floor``: PyAV in ``--workers`` spawned processes, every audio and every video frame decoded,
  nothing converted, resampled or written; decoder threading as ``mosear shard`` uses it
  (``decode_threads``, default 1 thread per clip). Process start-up is inside the clock.
- ``ffmpeg CLI floor``: one ffmpeg process per clip, a ``select`` filter for the 16 frame numbers,
  scale + crop, the audio resampled, both outputs to /dev/null (no tar). Frame numbers come from a
  probe done before the clock starts.
- ``naive pool``: the obvious way: a process pool calling ffmpeg-python per clip (ffprobe, one ffmpeg
  call for the frames, one for the audio, arrays back to the parent, which writes WebDataset tars).
- ``mosear shard``: the command itself (``python -m mosear shard ...`` in a subprocess), so the wall
  time includes interpreter start-up, imports, planning, the embedded Ray's start and shut-down.
  ``samples_per_shard=10`` so that the small corpus gives every worker shards to build.

After each ``mosear shard`` run every stored frame is compared with an independent reference decode of
its source (``reference_frames`` of tests/shards/test_shard_frames.py: every frame decoded, nearest to
each target, the project's scale + crop); any mismatch makes the script exit 1. Peak RSS per worker is
the largest ``worker_peak_rss_mb`` in the shards' stats (mosear) or ``ru_maxrss`` of the pool processes
(libav floor). ``--compare CHECKOUT`` adds the ``mosear shard`` of another checkout (e.g. ``main``) to the
same run and compares every shard's tar sha256 with this checkout's (exit 1 when they differ). The load average before/after is printed with each table: on a shared machine compare
the ratios (measured minutes apart in one run), not the clips/s.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib.util
import io
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# ../shared/data beside the checkout (or beside a folder above it, e.g. a git worktree); MOSEAR_SHARED_DATA wins
SHARED = Path(os.environ.get("MOSEAR_SHARED_DATA") or next(
    (p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()), REPO.parent / "shared" / "data"))
T, H, W, SR = 16, 224, 224, 16000
APPROACHES = ("libav", "ffmpeg_cli", "naive", "mosear")
LABELS = {
    "libav": "libav decode-only floor (PyAV, all frames)",
    "ffmpeg_cli": "ffmpeg CLI floor (1 call/clip, select)",
    "naive": "naive pool (ffmpeg-python per clip)",
    "mosear": "mosear shard (command, start-up incl.)",
}


def source_clips() -> list[Path]:
    clips = sorted((SHARED / "ravdess_actor05").glob("01-*.mp4")) + sorted((SHARED / "crema_d").glob("*.mp4"))
    clips += sorted((SHARED / "crema_d").glob("*.flv"))
    if not clips:
        raise SystemExit(f"no clips in {SHARED} (set MOSEAR_SHARED_DATA)")
    return clips


def build_corpus(n: int, dst: Path) -> list[Path]:
    """``n`` clips (symlinks to the real ones, round robin) and a generic manifest."""
    dst.mkdir(parents=True, exist_ok=True)
    src = source_clips()
    out = []
    for i in range(n):
        s = src[i % len(src)]
        link = dst / f"{i:05d}_{s.stem}{s.suffix}"
        if not link.exists():
            os.symlink(s, link)
        out.append(link)
    with open(dst / "manifest.csv", "w") as fh:
        fh.write("path\n" + "".join(p.name + "\n" for p in out))
    return out


def _maxrss_mb() -> float:
    """Peak RSS of this process since its exec, MB (VmHWM; ru_maxrss would also count the parent's
    memory copied by the fork that precedes a spawn)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- libav decode-only floor ----------------------------------------------------------------------
def libav_floor_one(path: str, threads: int) -> tuple[int, float]:
    """Decode every audio and video frame of ``path`` (nothing kept); returns (frames, worker RSS MB)."""
    import av

    n = 0
    with av.open(path, metadata_errors="ignore") as container:
        streams = [container.streams.video[0]] + list(container.streams.audio[:1])
        streams[0].codec_context.thread_count = threads  # the same setting decode_clip applies
        if threads != 1:
            streams[0].thread_type = "AUTO"
        for packet in container.demux(*streams):
            for _ in packet.decode():
                n += 1
    return n, _maxrss_mb()


def _warm() -> None:
    import av  # noqa: F401  (the pool's start-up includes importing PyAV, as a worker's would)


def run_libav_floor(clips: list[Path], workers: int, threads: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_warm) as pool:
        results = list(pool.map(libav_floor_one, [str(p) for p in clips], [threads] * len(clips)))
    wall = time.perf_counter() - t0
    assert all(n > 0 for n, _ in results)
    return wall, max(r for _, r in results)


# --- ffmpeg CLI one-call floor ---------------------------------------------------------------------
def frame_numbers(path: Path) -> list[int]:
    from mosear.media import probe

    info = probe(path)
    n_frames = info.video_frames or int(info.duration_s * info.fps)
    return [min(n_frames - 1, int(round((i + 0.5) * info.duration_s / T * info.fps - 0.5))) for i in range(T)]


def ffmpeg_floor_one(path: Path, frames: list[int]) -> None:
    select = "+".join(f"eq(n\\,{k})" for k in frames)
    graph = (f"[0:v]select='{select}',scale={W}:{H}:force_original_aspect_ratio=increase,"
             f"crop={W}:{H},format=rgb24[v]")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(path), "-filter_complex", graph,
                    "-map", "[v]", "-fps_mode", "passthrough", "-f", "rawvideo", "-y", "/dev/null",
                    "-map", "0:a", "-ac", "1", "-ar", str(SR), "-f", "s16le", "-y", "/dev/null"], check=True)


def run_ffmpeg_cli(clips: list[Path], workers: int) -> tuple[float, float | None]:
    by_source = {p.resolve(): None for p in clips}
    for src in by_source:  # the probe is not timed: a floor
        by_source[src] = frame_numbers(src)
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as pool:  # threads only wait on the ffmpeg processes
        list(pool.map(lambda p: ffmpeg_floor_one(p, by_source[p.resolve()]), clips))
    return time.perf_counter() - t0, None


# --- naive process pool ---------------------------------------------------------------------------
def naive_one(path: str) -> tuple[str, np.ndarray, np.ndarray, float]:
    import ffmpeg

    info = ffmpeg.probe(path)
    duration = float(info["format"]["duration"])
    step = duration / T
    # ffmpeg-python escapes the commas itself; one frame interval (1/30 s) wide window per target
    select = "+".join(f"between(t,{(i + 0.5) * step:.4f},{(i + 0.5) * step + 0.0333:.4f})" for i in range(T))
    raw, _ = (ffmpeg.input(path).filter("select", select)
              .filter("scale", W, H, force_original_aspect_ratio="increase").filter("crop", W, H)
              .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
              .run(capture_stdout=True, quiet=True))
    frames = np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)[:T]
    pcm, _ = ffmpeg.input(path).output("pipe:", format="s16le", ac=1, ar=SR).run(capture_stdout=True, quiet=True)
    return Path(path).stem, frames, np.frombuffer(pcm, "<i2"), duration


def run_naive(clips: list[Path], workers: int, out: Path) -> tuple[float, float | None]:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    with pool, wds.ShardWriter(str(out / "naive-%06d.tar"), maxcount=10, verbose=0) as sink:
        for key, frames, pcm, duration in pool.map(naive_one, [str(p) for p in clips]):
            buf = io.BytesIO()
            np.save(buf, frames)
            sink.write({"__key__": key, "frames.npy": buf.getvalue(), "pcm.npy": pcm.tobytes(),
                        "json": json.dumps({"duration_s": duration}).encode()})
    return time.perf_counter() - t0, None


# --- mosear shard -----------------------------------------------------------------------------------
def mosear_command(corpus: Path, out: Path, workers: int, threads: int, extra: list[str]) -> list[str]:
    sources = json.dumps([{"adapter": "generic", "root": str(corpus), "manifest": str(corpus / "manifest.csv")}])
    return [sys.executable, "-m", "mosear", "shard", f"sources={sources}", f"output={out}",
            f"num_frames={T}", f"height={H}", f"width={W}", f"sample_rate={SR}", f"workers={workers}",
            f"decode_threads={threads}", "samples_per_shard=10", "progress=false", *extra]


def run_mosear(corpus: Path, out: Path, workers: int, threads: int, extra: list[str],
               repo: Path = REPO) -> tuple[float, float, float]:
    """(wall seconds of the command, peak worker RSS MB, the workers' CPU seconds in their shard tasks);
    ``repo``: the checkout whose mosear runs. Ray's worker processes are not reaped by the command, so
    their CPU comes from the shards' stats (``worker_cpu_s``; 0 for a checkout that does not write it)."""
    env = dict(os.environ, PYTHONPATH=str(repo))
    t0 = time.perf_counter()
    proc = subprocess.run(mosear_command(corpus, out, workers, threads, extra), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mosear shard failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stats = [json.loads(p.read_text()) for p in out.glob("*.stats.json")]
    n = sum(s["num_samples"] for s in stats)
    if n != len(list(corpus.glob("0*"))):
        raise SystemExit(f"mosear shard wrote {n} samples:\n{proc.stdout[-2000:]}")
    return wall, max(s.get("worker_peak_rss_mb", 0.0) for s in stats), sum(s.get("worker_cpu_s", 0.0) for s in stats)


def tar_digests(out: Path) -> dict[str, str]:
    return {p.name: json.loads(p.read_text())["tar_sha256"] for p in sorted(out.glob("*.stats.json"))}


def _reference():
    spec = importlib.util.spec_from_file_location("_frames_ref", REPO / "tests" / "shards" / "test_shard_frames.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.reference_frames


def check_frames(out: Path, corpus: Path, refs: dict[str, np.ndarray]) -> tuple[int, list[tuple[str, list[int]]]]:
    """Compare every stored frame with the reference decode of its source; returns (samples, wrong)."""
    from mosear.shards.reader import iter_samples, list_shards

    reference_frames = None
    seen, wrong = 0, []
    for sample in iter_samples(list_shards(out)):
        src = Path(os.path.realpath(corpus / sample["meta"]["source"]))
        if src.name not in refs:
            reference_frames = reference_frames or _reference()
            refs[src.name] = reference_frames(src, T, H, W, "crop")
        ref = refs[src.name]
        got = sample["frames"]
        bad = [i for i in range(len(ref)) if got.shape != ref.shape or not np.array_equal(got[i], ref[i])]
        if bad:
            wrong.append((sample["key"], bad))
        seen += 1
    return seen, wrong


# --- driver ----------------------------------------------------------------------------------------------
def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (5-min {five:.1f})"


def _cpu() -> float:
    """CPU seconds of this process and of its reaped descendants (pool processes, ffmpeg, the mosear
    command with its Ray processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _with_cpu(fn, *a, **kw) -> tuple[float, float | None, float]:
    c0 = _cpu()
    wall, peak, *more = fn(*a, **kw)
    return wall, peak, _cpu() - c0 + sum(more)


def measure(n: int, approaches: list[str], args, tmp: Path, refs: dict) -> dict:
    corpus = tmp / f"corpus{n}"
    clips = build_corpus(n, corpus)
    rows: dict[str, list[tuple[float, float | None, float]]] = {a: [] for a in approaches}
    load0 = _load()
    check, digests = None, {}
    for r in range(args.repeats):
        for a in approaches:
            if a == "libav":
                rows[a].append(_with_cpu(run_libav_floor, clips, args.workers, args.decode_threads))
            elif a == "ffmpeg_cli":
                rows[a].append(_with_cpu(run_ffmpeg_cli, clips, args.workers))
            elif a == "naive":
                rows[a].append(_with_cpu(run_naive, clips, args.workers, tmp / f"naive{n}-{r}"))
                shutil.rmtree(tmp / f"naive{n}-{r}", ignore_errors=True)
            elif a == "mosear":
                out = tmp / f"mosear{n}-{r}"
                rows[a].append(_with_cpu(run_mosear, corpus, out, args.workers, args.decode_threads, args.mosear_args))
                if check is None and not args.no_check:
                    check = check_frames(out, corpus, refs)
                if r == 0:
                    digests["mosear"] = tar_digests(out)
                shutil.rmtree(out, ignore_errors=True)
            elif a.startswith("mosear@"):
                out = tmp / f"{a.replace('@', '-').replace('/', '_')}{n}-{r}"
                rows[a].append(_with_cpu(run_mosear, corpus, out, args.workers, args.decode_threads, args.mosear_args,
                                         repo=Path(a.split("@", 1)[1])))
                if r == 0:
                    digests[a] = tar_digests(out)
                shutil.rmtree(out, ignore_errors=True)
            print(f"  {n} clips, {a}, run {r + 1}: {rows[a][-1][0]:.1f} s (load {_load()})", file=sys.stderr)
    return {"n": n, "rows": rows, "load": (load0, _load()), "check": check, "digests": digests}


def print_table(res: dict, workers: int) -> None:
    n, rows = res["n"], res["rows"]
    best = {a: min(v) for a, v in rows.items()}  # the run with the shortest wall time
    floor = best.get("libav")
    print(f"\n{n} clips, {T} frames {H}x{W} + {SR} Hz mono, {workers} workers, best of "
          f"{len(next(iter(rows.values())))}; load avg {res['load'][0]} -> {res['load'][1]} on {os.cpu_count()} CPUs\n")
    print("| approach | wall s | clips/s | x libav floor | CPU s | x floor (CPU) | peak RSS/worker MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for a, (wall, _, cpu) in best.items():
        peaks = [p for _, p, _ in rows[a] if p is not None]
        label = LABELS.get(a) or f"mosear shard @ {Path(a.split('@', 1)[1]).name}"
        ratio = f"{floor[0] / wall:.2f}" if floor else "-"
        cratio = f"{floor[2] / cpu:.2f}" if floor else "-"
        peak = f"{max(peaks):.0f}" if peaks else "-"
        print(f"| {label} | {wall:.1f} | {n / wall:.2f} | {ratio} | {cpu:.1f} | {cratio} | {peak} |")
    print("\n(CPU s: user + system time of the approach's processes (mosear: the command and its workers' shard\n"
          " tasks; Ray's own daemons are not counted). On a loaded machine the CPU ratio is the steadier one; on\n"
          " a quiet one quote the wall ratio, which also counts idle start-up and tail time.)")
    if res["check"] is not None:
        seen, wrong = res["check"]
        verdict = "all identical" if not wrong else f"{len(wrong)} samples WRONG, e.g. {wrong[:3]}"
        print(f"\nframe check (mosear output vs reference decode): {seen} samples x {T} frames: {verdict}")
    ref = res["digests"].get("mosear")
    for a, d in res["digests"].items():
        if a != "mosear" and ref is not None:
            same = "byte-identical tars" if d == ref else "TARS DIFFER"
            print(f"{a}: {len(d)} shards, {same} to this checkout's (tar sha256 of every shard)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, nargs="+", default=[200], help="corpus sizes (e.g. 200 2000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--decode-threads", type=int, default=1, help="libav threads per clip (mosear's decode_threads)")
    ap.add_argument("--approaches", default=None,
                    help=f"comma list of {','.join(APPROACHES)} (default: all at the first size; libav,ffmpeg_cli,"
                         "mosear at larger sizes: the naive pool takes ~10 min per 2000 clips)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each approach (the best is reported)")
    ap.add_argument("--no-check", action="store_true", help="skip the frame check against the reference decode")
    ap.add_argument("--mosear-args", nargs="*", default=[], help="extra key=value overrides for mosear shard")
    ap.add_argument("--compare", nargs="*", default=[], metavar="CHECKOUT",
                    help="also run `mosear shard` of these checkouts (e.g. a worktree of main) in the same run, "
                         "and compare their tars byte for byte with this checkout's")
    args = ap.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    results, refs = [], {}
    with tempfile.TemporaryDirectory(prefix="mosear-bench-") as tmp:
        for i, n in enumerate(args.clips):
            default = list(APPROACHES) if i == 0 else ["libav", "ffmpeg_cli", "mosear"]
            approaches = args.approaches.split(",") if args.approaches else default
            approaches += [f"mosear@{Path(c).resolve()}" for c in args.compare]
            unknown = {a for a in approaches if not a.startswith("mosear@")} - set(APPROACHES)
            if unknown:
                raise SystemExit(f"unknown approaches {sorted(unknown)}; known: {', '.join(APPROACHES)}")
            results.append(measure(n, approaches, args, Path(tmp), refs))
    for res in results:
        print_table(res, args.workers)
    mosear = [res for res in results if "mosear" in res["rows"]]
    if len(mosear) > 1:
        peaks = [max(p for _, p, _ in res["rows"]["mosear"]) for res in mosear]
        print(f"\nmosear peak RSS per worker: " + ", ".join(f"{p:.0f} MB at {r['n']} clips" for p, r in zip(peaks, mosear))
              + f" ({(peaks[-1] / peaks[0] - 1):+.1%} from {mosear[0]['n']} to {mosear[-1]['n']})")
    differ = any(d != res["digests"].get("mosear") for res in results for a, d in res["digests"].items())
    if any(res["check"] and res["check"][1] for res in results) or differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
