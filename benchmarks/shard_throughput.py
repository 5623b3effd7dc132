"""Shard throughput: ``mosear shard`` vs the ffmpeg floor vs a naive ffmpeg-per-clip process pool.

    python benchmarks/shard_throughput.py [--clips 200] [--mem-clips 800] [--workers 2]

Corpus: ``--clips`` real clips from ``../shared/data`` (RAVDESS actor 05 originals, h264 1280x720; the
CREMA-D mp4s and the FLV/VP6 original, 480x360), repeated through symlinks. Every approach produces,
per clip, 16 frames at 224x224 (aspect-preserving scale + center crop, RGB) and 16 kHz mono audio,
with ``--workers`` processes:

- ``mosear shard``: the real stage (Ray Data, PyAV one-pass decode, tar shards + index + stats);
  Ray is started before the clock starts.
- ``ffmpeg floor``: one ffmpeg process per clip, a ``select`` filter for the same 16 frame numbers,
  scale+crop, and the audio resampled, both written to /dev/null (no probe, no tar: a floor). Frame
  numbers come from a probe done before timing.
- ``naive pool``: the obvious way: a ``ProcessPoolExecutor`` calling ffmpeg-python per clip (ffprobe,
  one ffmpeg call for the frames, one for the audio, arrays returned to the parent, which writes
  WebDataset tars with ``webdataset.TarWriter``).

Peak memory per worker (max RSS of a Ray worker process, from each shard's stats) is measured on a
fresh Ray for ``--clips`` and for ``--mem-clips`` clips: it should not grow with the corpus.
The machine may be shared: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
T, H, W, SR = 16, 224, 224, 16000


def source_clips() -> list[Path]:
    clips = sorted((SHARED / "ravdess_actor05").glob("01-*.mp4")) + sorted((SHARED / "crema_d").glob("*.mp4"))
    clips += sorted((SHARED / "crema_d").glob("*.flv"))
    if not clips:
        raise SystemExit(f"no clips in {SHARED}")
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


# --- (a) ffmpeg floor ---------------------------------------------------------------------------
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


def run_floor(clips: list[Path], workers: int) -> float:
    plan = [(p, frame_numbers(p)) for p in clips]  # the probe is not timed: a floor
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as pool:  # threads only wait on the ffmpeg processes
        list(pool.map(lambda a: ffmpeg_floor_one(*a), plan))
    return time.perf_counter() - t0


# --- (b) naive process pool ---------------------------------------------------------------------
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


def run_naive(clips: list[Path], workers: int, out: Path) -> float:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))  # fork after Ray is unsafe
    with pool, wds.ShardWriter(str(out / "naive-%06d.tar"), maxcount=10, verbose=0) as sink:
        for key, frames, pcm, duration in pool.map(naive_one, [str(p) for p in clips]):
            buf = io.BytesIO()
            np.save(buf, frames)
            sink.write({"__key__": key, "frames.npy": buf.getvalue(), "pcm.npy": pcm.tobytes(),
                        "json": json.dumps({"duration_s": duration}).encode()})
    return time.perf_counter() - t0


# --- mosear shard -------------------------------------------------------------------------------
def run_mosear(corpus: Path, out: Path, workers: int) -> tuple[float, float, float]:
    """(wall seconds, media seconds, peak worker RSS MB) on a fresh embedded Ray."""
    import ray

    from mosear.config import load_config
    from mosear.ray_utils import init_ray
    from mosear.shards.config import ShardConfig
    from mosear.shards.run import run_shard

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=workers)
    cfg = load_config(ShardConfig, overrides={
        "sources": [{"adapter": "generic", "root": str(corpus), "manifest": str(corpus / "manifest.csv")}],
        "output": str(out), "num_frames": T, "height": H, "width": W, "workers": workers,
        "samples_per_shard": 10, "progress": False})
    t0 = time.perf_counter()
    result = run_shard(cfg)
    wall = time.perf_counter() - t0
    assert result.written == result.inputs, result.summary()
    peak = max(json.loads(p.read_text()).get("worker_peak_rss_mb", 0) for p in out.glob("*.stats.json"))
    ray.shutdown()
    return wall, result.media_seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--mem-clips", type=int, default=800)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mosear-bench-") as tmp:
        tmp = Path(tmp)
        clips = build_corpus(args.clips, tmp / "corpus")
        media = None
        rows = []
        wall, media, peak_small = run_mosear(tmp / "corpus", tmp / "out_mosear", args.workers)
        rows.append(("mosear shard (PyAV, Ray Data)", wall))
        rows.append(("(a) ffmpeg floor (select, 1 proc/clip)", run_floor(clips, args.workers)))
        rows.append(("(b) naive pool (ffmpeg-python per clip)", run_naive(clips, args.workers, tmp / "out_naive")))
        build_corpus(args.mem_clips, tmp / "corpus_big")
        _, _, peak_big = run_mosear(tmp / "corpus_big", tmp / "out_big", args.workers)
    load1 = os.getloadavg()

    n = args.clips
    floor_wall, naive_wall = rows[1][1], rows[2][1]
    print(f"\n{n} clips ({media:.0f} s of media), {T} frames {H}x{W} + {SR} Hz mono, {args.workers} workers; "
          f"load avg {load0[0]:.1f} -> {load1[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(f"| {'approach':42s} | {'wall s':>7s} | {'clips/s':>7s} | {'media-s/s':>9s} | {'vs floor':>8s} | {'vs naive':>8s} |")
    print(f"|{'-' * 44}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 10}|")
    for name, wall in rows:
        print(f"| {name:42s} | {wall:7.1f} | {n / wall:7.2f} | {media / wall:9.1f} | {floor_wall / wall:8.2f} | "
              f"{naive_wall / wall:8.2f} |")
    print(f"\npeak RSS per mosear worker: {peak_small:.0f} MB at {n} clips, {peak_big:.0f} MB at {args.mem_clips} clips "
          f"(growth {peak_big - peak_small:+.0f} MB)")


if __name__ == "__main__":
    main()
