"""Per-phase profile of one shard worker, and of the command around it.

    python benchmarks/shard_profile.py [--clips 88] [--workers 2]     # ~1.5 min on a quiet 2-core machine

Part 1 (one process, no Ray): the clips of ``--clips`` (the benchmark corpus of shard_throughput.py)
go through a replay of ``decode_clip`` + ``ShardWriter.write`` with a timer around every libav and
writer call: open/probe, demux, video decode, audio decode, audio resample, frame selection +
conversion + scaling, serialisation (npy, wav, json), tar write (+ fsync, index, stats). The replay's
frames and audio are checked equal to ``decode_clip``'s, and its total is checked against the real
``build_shard`` on the same clips (both printed), so the replay cannot drift from the code it profiles.

Part 2 (the command): interpreter + imports, Ray start/stop, and the real ``mosear shard`` command on
the same corpus with ``--workers``; Ray/scheduling overhead = command wall - start-up - the workers'
busy time (sum of the shards' ``wall_s`` / workers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# Part 1 counts the process's CPU time (all its threads): on a shared machine wall time per call mostly
# measures the other tenants; --wall switches to wall time.
CLOCK = time.process_time

PHASES = ("open/probe", "demux", "video decode", "audio decode", "audio resample",
          "frame select + convert + scale", "serialise (npy, wav, json)", "tar write + commit")


def replay(path: str, cfg, clock: dict[str, float]):
    """decode_clip's work with a timer per call; returns (frames, audio, DecodedClip-like probe)."""
    import av

    from mosear.media.decode import _check_path, _open, _probe_container, _scaled_size, resize_frame

    t = CLOCK
    t0 = t()
    size = _check_path(Path(path))
    container = _open(Path(path))
    info = _probe_container(container, size)
    vstream = container.streams.video[0]
    astream = container.streams.audio[0] if container.streams.audio else None
    vstream.codec_context.thread_count = cfg.decode_threads
    if cfg.decode_threads != 1:
        vstream.thread_type = "AUTO"
    start = float(vstream.start_time * vstream.time_base) if vstream.start_time is not None else info.start_s
    duration = info.duration_s
    targets = [start + (i + 0.5) * duration / cfg.num_frames for i in range(cfg.num_frames)]
    resampler = av.AudioResampler(format="s16", layout="mono", rate=cfg.sample_rate) if astream else None
    clock["open/probe"] += t() - t0

    frames, chunks, prev, n, last = [], [], None, 0, None
    conv = "frame select + convert + scale"

    def keep(frame, index):
        nonlocal last
        t1 = t()
        if last is None or last[0] != index:
            sw, sh = _scaled_size(frame.width, frame.height, cfg.height, cfg.width, cfg.resize)
            img = frame.to_ndarray(width=sw, height=sh, format="rgb24", interpolation="AREA")
            last = (index, resize_frame(img, cfg.height, cfg.width, cfg.resize))
        frames.append(last[1])
        clock[conv] += t() - t1

    demux = container.demux(*[s for s in (vstream, astream) if s is not None])
    done = False
    while True:
        t1 = t()
        packet = next(demux, None)
        clock["demux"] += t() - t1
        if packet is None:
            break
        video = packet.stream.type == "video"
        if video and done:
            continue
        t1 = t()
        decoded = packet.decode()
        clock["video decode" if video else "audio decode"] += t() - t1
        for frame in decoded:
            if video:
                ft = float(frame.time)
                while len(frames) < cfg.num_frames and ft >= targets[len(frames)]:
                    tg = targets[len(frames)]
                    if prev is not None and abs(prev[1] - tg) <= abs(ft - tg):
                        keep(prev[0], prev[2])
                    else:
                        keep(frame, n)
                prev = (frame, ft, n)
                n += 1
                done = len(frames) == cfg.num_frames
            else:
                t1 = t()
                chunks.extend(o.to_ndarray().reshape(-1) for o in resampler.resample(frame))
                clock["audio resample"] += t() - t1
    t1 = t()
    if resampler is not None:
        chunks.extend(o.to_ndarray().reshape(-1) for o in resampler.resample(None))
    audio = np.concatenate(chunks).astype(np.int16, copy=False)
    clock["audio resample"] += t() - t1
    t1 = t()
    while len(frames) < cfg.num_frames:
        keep(prev[0], prev[2])
    out = np.stack(frames)
    clock[conv] += t() - t1
    t1 = t()
    container.close()
    clock["open/probe"] += t() - t1
    return out, audio


def part1(clips: list[dict], cfg, out_dir: Path) -> dict:
    import shard_throughput as bench
    from mosear.media.decode import decode_clip
    from mosear.shards import writer as wr
    from mosear.shards.run import _clip_meta, build_shard
    from mosear.shards.plan import ShardPlan

    clock: dict[str, float] = defaultdict(float)
    for c in clips[:2]:  # warm the page cache and the libraries
        decode_clip(c["path"])
    t_all = CLOCK()
    with wr.ShardWriter(out_dir / "replay", "train", 0, "profile") as w:
        for c in clips:
            frames, audio = replay(c["path"], cfg, clock)
            ref = decode_clip(c["path"], num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                              resize=cfg.resize, sample_rate=cfg.sample_rate, threads=cfg.decode_threads)
            assert np.array_equal(frames, ref.frames) and np.array_equal(audio, ref.audio), c["path"]
            meta = _clip_meta(c, ref)
            key = f"{c['dataset']}__{c['clip_id']}"
            t1 = CLOCK()
            blobs = (wr._npy(frames), wr.encode_wav(audio, cfg.sample_rate),
                     json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
            clock["serialise (npy, wav, json)"] += CLOCK() - t1
            t1 = CLOCK()
            w.write(wr.ShardSample(key, frames, audio, cfg.sample_rate, meta))
            clock["tar write + commit"] += CLOCK() - t1
            del blobs
        t1 = CLOCK()
    clock["tar write + commit"] += CLOCK() - t1
    # write() serialises again: what is left of it after the serialisation is the tar write
    clock["tar write + commit"] -= clock["serialise (npy, wav, json)"]
    replay_wall = CLOCK() - t_all
    t1 = CLOCK()
    build_shard(ShardPlan("train", 0, clips), cfg, out_dir / "real", "profile")
    real = CLOCK() - t1
    t1 = CLOCK()
    for c in clips:
        bench.libav_floor_one(c["path"], cfg.decode_threads)
    floor = CLOCK() - t1
    return {"clock": dict(clock), "n": len(clips), "real_s": real, "replay_s": replay_wall, "floor_s": floor}


def part2(corpus: Path, out: Path, workers: int, threads: int) -> dict:
    import shard_throughput as bench

    env = dict(os.environ, PYTHONPATH=str(REPO))
    py = sys.executable
    t0 = time.perf_counter()
    subprocess.run([py, "-c", "pass"], check=True, env=env)
    interp = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([py, "-c", "import mosear.cli, mosear.shards.cli, mosear.shards.run, mosear.media.decode, ray, pyarrow.parquet, tqdm"],
                   check=True, env=env)
    imports = time.perf_counter() - t0 - interp
    code = ("import time; t=time.perf_counter(); from mosear.ray_utils import init_ray; ray=init_ray(num_cpus=%d); "
            "a=time.perf_counter()-t; t=time.perf_counter(); ray.get(ray.remote(lambda: 1).remote()); "
            "b=time.perf_counter()-t; t=time.perf_counter(); ray.shutdown(); print(a, b, time.perf_counter()-t)" % workers)
    r = subprocess.run([py, "-c", code], check=True, env=env, capture_output=True, text=True)
    ray_init, first_task, ray_stop = map(float, r.stdout.split()[-3:])
    wall, _, worker_cpu = bench.run_mosear(corpus, out, workers, threads, [])
    stats = [json.loads(p.read_text()) for p in out.glob("*.stats.json")]
    busy = sum(s["wall_s"] for s in stats) / workers
    run_wall = json.loads((out / "run.json").read_text())["totals"]["wall_s"]
    return {"interp": interp, "imports": imports, "ray_init": ray_init, "first_task": first_task, "ray_stop": ray_stop,
            "command": wall, "run_wall": run_wall, "busy": busy, "worker_cpu": worker_cpu, "n": sum(s["num_samples"] for s in stats)}


def main() -> None:
    import shard_throughput as bench

    from mosear.config import load_config
    from mosear.shards.config import ShardConfig
    from mosear.shards.plan import plan_corpus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=88, help="clips (4 passes over the 22 distinct sources)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--decode-threads", type=int, default=1)
    ap.add_argument("--no-command", action="store_true", help="part 1 only")
    ap.add_argument("--no-replay", action="store_true", help="part 2 only")
    ap.add_argument("--wall", action="store_true", help="part 1 in wall time instead of CPU time")
    args = ap.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mosear-profile-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        bench.build_corpus(args.clips, corpus)
        cfg = load_config(ShardConfig, overrides={
            "sources": [{"adapter": "generic", "root": str(corpus), "manifest": str(corpus / "manifest.csv")}],
            "output": str(tmp / "unused"), "decode_threads": args.decode_threads})
        clips = [c for s in plan_corpus(cfg).shards for c in s.clips]
        p1 = None if args.no_replay else part1(clips, cfg, tmp)
        p2 = None if args.no_command else part2(corpus, tmp / "cmd", args.workers, args.decode_threads)
    load1 = os.getloadavg()[0]

    if p1 is not None:
        print_part1(p1, args, load0, load1)
    if p2 is not None:
        print_part2(p2, args)


def print_part1(p1: dict, args, load0: float, load1: float) -> None:
    import shard_throughput as bench

    n, clock = p1["n"], p1["clock"]
    total = sum(clock.values())
    print(f"\none worker, {n} clips, {bench.T} frames {bench.H}x{bench.W} + {bench.SR} Hz mono, decode_threads="
          f"{args.decode_threads}, {'wall' if args.wall else 'CPU'} time; load avg {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs\n")
    print("| phase (in the worker) | ms per clip | share |")
    print("|---|---:|---:|")
    for ph in PHASES:
        print(f"| {ph} | {1000 * clock.get(ph, 0) / n:.1f} | {clock.get(ph, 0) / total:.1%} |")
    print(f"| **sum of phases** | **{1000 * total / n:.1f}** | 100% |")
    print(f"\n(the real build_shard on the same clips: {1000 * p1['real_s'] / n:.1f} ms per clip; the libav floor "
          f"(every frame decoded, nothing else): {1000 * p1['floor_s'] / n:.1f}; the replay with its checks: "
          f"{1000 * p1['replay_s'] / n:.1f})\n")


def print_part2(p2: dict, args) -> None:
    startup = p2["interp"] + p2["imports"] + p2["ray_init"] + p2["first_task"] + p2["ray_stop"]
    sched = p2["command"] - startup - p2["busy"]  # plan, output checks, scheduling, result collection, tail
    print(f"| the command, {p2['n']} clips, {args.workers} workers | s | per clip, ms of wall |")
    print("|---|---:|---:|")
    for name, v in (("interpreter start", p2["interp"]), ("imports (mosear, ray, pyarrow, tqdm)", p2["imports"]),
                    ("Ray start (embedded)", p2["ray_init"]), ("first task (worker start)", p2["first_task"]),
                    ("Ray shut-down", p2["ray_stop"]),
                    ("workers busy (sum of shard wall_s / workers)", p2["busy"]),
                    ("  of which CPU (sum of shard worker_cpu_s / workers)", p2["worker_cpu"] / args.workers),
                    ("Ray/scheduling + plan + driver (the rest)", sched),
                    ("**command wall**", p2["command"])):
        print(f"| {name} | {v:.2f} | {1000 * v / p2['n']:.1f} |")


if __name__ == "__main__":
    main()
