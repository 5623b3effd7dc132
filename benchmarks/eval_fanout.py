"""Evaluation fan-out: N units (checkpoint × benchmark × setting) on 1 and 2 Ray workers, and a rerun
with everything cached.

    python3 benchmarks/eval_fanout.py                 # 8 units, tiny model, sample corpus
    python3 benchmarks/eval_fanout.py --units 12 --items 21

Set-up (not timed): the committed sample corpus (``datasets/samples``, real RAVDESS / CREMA-D clips)
is sharded at 4 frames of 32x32; a CA-MER-style benchmark is written over ``--items`` of its keys
(subsets round-robin); one real tiny-model MoSE checkpoint is saved. The units are that checkpoint on
that benchmark under ``--units`` settings (AR off, AR on, audio removed, video removed, then AR
fraction sweep points). Each unit loads the model, streams its samples, scores the labels, generates
8 tokens, judges them and writes its Parquet file: the real unit, nothing stubbed.

For each worker count an embedded Ray with that many CPUs is started, and one warm-up unit per worker
(its own output folder) runs first, so the timed run sees warm worker processes as a long evaluation
does; that cold start is reported on its own. Efficiency = speedup / workers, with speedup against the
1-worker run of the same invocation. The cached rerun repeats the 2-worker evaluation into the same
folder (best of 3): it reads the benchmark files, hashes the checkpoint, label files and shard
markers, finds every unit done and leaves metrics as they are (no report in any timed run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosear.config import load_config  # noqa: E402
from mosear.evaluate.config import EvalConfig  # noqa: E402
from mosear.ray_utils import init_ray, ray_env_defaults  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def prepare(work: Path, items: int) -> tuple[Path, Path, Path]:
    from mosear.model import ModelConfig, build_model
    from mosear.shards import run_shard
    from mosear.shards.config import ShardConfig
    from mosear.shards.reader import iter_samples, list_shards

    shards = work / "shards"
    run_shard(load_config(ShardConfig, overrides={
        "corpus": str(REPO / "datasets" / "samples" / "corpus.yaml"), "output": str(shards), "num_frames": 4,
        "height": 32, "width": 32, "samples_per_shard": 8, "progress": False}))
    keys = [(s["key"], s["meta"]["label"]) for s in iter_samples(list_shards(shards))][:items]
    bench = work / "camer"
    bench.mkdir()
    subsets = ("video_aligned", "audio_aligned", "consistent")
    rows: dict[str, dict] = {s: {} for s in subsets}
    for i, (k, lab) in enumerate(keys):
        rows[subsets[i % 3]][k] = {"reason": f"The face looks {lab}; the voice sounds tense.", "label": lab}
    for s, r in rows.items():
        (bench / f"{s}.json").write_text(json.dumps(r))
    ckpt = work / "mose" / "adapter"
    build_model(ModelConfig(preset="tiny", adapter="mose")).save_adapter(ckpt)
    return shards, bench, ckpt


def settings(n: int) -> list[dict]:
    base = [{"name": "ar_off"}, {"name": "ar_on", "ar": True, "ar_fraction": 0.5},
            {"name": "no_audio", "drop": "audio"}, {"name": "no_video", "drop": "video"}]
    sweep = [{"name": f"ar_f{f:.2f}", "ar": True, "ar_fraction": round(f, 4), "ar_threshold": 0.0}
             for f in [0.1 * (i + 1) for i in range(max(0, n - len(base)))]]
    return (base + sweep)[:n]


def make_cfg(output: Path, shards: Path, bench: Path, ckpt: Path, sets: list[dict]) -> EvalConfig:
    return load_config(EvalConfig, overrides={
        "checkpoints": [str(ckpt)], "output": str(output), "settings": sets, "max_new_tokens": 8,
        "progress": False, "report": False,
        "benchmarks": [{"name": "camer", "format": "mined", "path": str(bench), "shards": str(shards)}],
    })


def timed(cfg: EvalConfig):
    from mosear.evaluate.fanout import run_eval

    t0 = time.perf_counter()
    res = run_eval(cfg)
    wall = time.perf_counter() - t0
    if not res.ok:
        raise SystemExit(f"units failed: {res.failed}")
    return wall, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=8, help="evaluation units (settings of one checkpoint)")
    ap.add_argument("--items", type=int, default=21, help="benchmark items per unit (the corpus has 21)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per worker count (best is reported)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    ray_env_defaults()
    import ray

    work = Path(tempfile.mkdtemp(prefix="mosear-evalbench-"))
    init_ray(num_cpus=2)
    shards, bench, ckpt = prepare(work, args.items)
    ray.shutdown()
    sets = settings(args.units)
    rows = []
    results = {}
    for workers in (1, 2):
        init_ray(num_cpus=workers)
        # one warm-up unit per worker (run together), so every worker process has imported torch/transformers
        warm = [{"name": f"warmup{i}", "monitor": False, "ar_threshold": 0.01 * i} for i in range(workers)]
        cold, _ = timed(make_cfg(work / f"warm{workers}", shards, bench, ckpt, warm))
        walls = []
        for r in range(args.repeat):  # the machine's speed drifts: best of --repeat fresh runs
            out = work / f"run{workers}-{r}"
            wall, res = timed(make_cfg(out, shards, bench, ckpt, sets))
            assert len(res.computed) == len(sets)
            walls.append(wall)
        wall = min(walls)
        results[workers] = (wall, out, cold)
        if workers == 2:
            reruns = []
            for _ in range(3):
                t, res2 = timed(make_cfg(out, shards, bench, ckpt, sets))
                assert not res2.computed and len(res2.cached) == len(sets)
                reruns.append(t)
            rerun = min(reruns)
        ray.shutdown()
    base = results[1][0]
    for workers, (wall, _out, cold) in results.items():
        speed = base / wall
        rows.append((f"{workers} worker{'s' if workers > 1 else ''}", len(sets), wall, len(sets) / wall, speed, speed / workers, cold))
    print(f"\nEvaluation fan-out: {len(sets)} units x {args.items} items (tiny MoSE model), best of {args.repeat}\n")
    print("| run | units | wall s | units/s | speedup vs 1 worker | efficiency | cold warm-up s |")
    print("|---|---|---|---|---|---|---|")
    for name, n, wall, ups, sp, eff, cold in rows:
        print(f"| {name} | {n} | {wall:.1f} | {ups:.2f} | {sp:.2f}x | {eff:.0%} | {cold:.1f} |")
    print(f"| rerun, all cached (2 workers) | {len(sets)} | {rerun * 1000:.0f} ms | - | {base / rerun:.0f}x faster than computing on 1 worker "
          f"| {rerun / results[2][0]:.1%} of the 2-worker run | - |")
    if args.keep:
        print(f"\nwork folder: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
