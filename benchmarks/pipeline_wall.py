"""Wall time of ``mosear run`` on the sample corpus, split by stage, and what orchestration costs.

Three measurements in one run, on the same machine, same corpus, same stage configs:

1. ``mosear run`` from scratch (embedded Ray + Prefect's temporary server), with ``--timings``: the
   process's start-up until the flow body starts (Python imports + Prefect's temporary API server),
   the Ray start-up inside the first stage, and each stage's own seconds.
2. The baseline: the same four stages as plain ``mosear <stage> --config ...`` processes one after
   the other (no Prefect; each process starts its own embedded Ray), timed from outside.
3. ``mosear run`` again with nothing changed: every stage restored from its cache record, so the
   whole wall time is orchestration.

    python benchmarks/pipeline_wall.py [--stages shard,mine,train,eval] [--keep DIR]

Prints a markdown table; the ratio column is ``mosear run`` / direct CLIs. The sample run trains two
checkpoints (``train:lora``, ``train:mose``), each a row; the machine's load average is printed last
(on a shared machine the wall times scale with it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mosear.orchestrate.workdir import pipeline_requests  # noqa: E402


def _env(prefect_home: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _mosear_run(workdir: Path, stages: str, env: dict, timings: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "mosear.cli", "run", "--workdir", str(workdir), "--stages", stages, "--timings", str(timings)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"mosear run failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return wall, json.loads(timings.read_text())


def _direct_clis(workdir: Path, stages: str, env: dict) -> dict[str, float]:
    corpus = str(REPO / "datasets" / "samples" / "corpus_splices.yaml")
    out: dict[str, float] = {}
    for req in pipeline_requests(corpus, str(workdir), stages.split(",")):
        name = req.label or req.stage  # train runs once per method: train:lora, train:mose
        cfg = workdir / f"{name.replace(':', '-')}.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        cfg.write_text(yaml.safe_dump(req.overrides))
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "mosear.cli", req.stage, "--config", str(cfg)],
                             cwd=REPO, env=env, capture_output=True, text=True)
        out[name] = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"mosear {req.stage} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="shard,mine,train,eval")
    ap.add_argument("--keep", default=None, help="keep the outputs in this folder (default: a temp dir, removed)")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="mosear-bench-"))
    root.mkdir(parents=True, exist_ok=True)  # --keep may name a new folder: Prefect's home goes inside it
    env = _env(root / "prefect-home")
    try:
        cold_wall, cold = _mosear_run(root / "run", args.stages, env, root / "cold.json")
        direct = _direct_clis(root / "direct", args.stages, env)
        warm_wall, warm = _mosear_run(root / "run", args.stages, env, root / "warm.json")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    stages = list(cold["stages"])
    ray_start = sum(s["ray_startup_s"] for s in cold["stages"].values())
    work = {s: cold["stages"][s]["seconds"] - cold["stages"][s]["ray_startup_s"] for s in stages}
    work_total = sum(work.values())
    direct_total = sum(direct.values())
    print(f"## `mosear run` on the sample corpus ({os.cpu_count()} CPUs)\n")
    print("| part | mosear run (s) | direct CLIs (s) | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| Prefect start-up (imports + temporary API server) | {cold['prefect_startup_s']:.1f} | - | - |")
    print(f"| Ray start-up (embedded, once) | {ray_start:.1f} | (in each stage) | - |")
    for s in stages:
        print(f"| {s} (work) | {work[s]:.1f} | {direct[s]:.1f} | {work[s] / direct[s]:.2f} |")
    other = cold_wall - cold["prefect_startup_s"] - ray_start - work_total
    print(f"| other (task/flow bookkeeping, artifacts, server shutdown) | {other:.1f} | - | - |")
    print(f"| **total wall** | **{cold_wall:.1f}** | **{direct_total:.1f}** | **{cold_wall / direct_total:.2f}** |")
    startup = cold["prefect_startup_s"] + ray_start
    print(
        f"\nshare of `mosear run` wall time: Prefect/Ray start-up {100 * startup / cold_wall:.0f} % "
        f"(Prefect {100 * cold['prefect_startup_s'] / cold_wall:.0f} %, Ray {100 * ray_start / cold_wall:.0f} %), "
        f"stage work {100 * work_total / cold_wall:.0f} %, other {100 * other / cold_wall:.0f} %"
    )
    print(
        f"\nrerun with nothing changed (all {len(stages)} stages restored from cache): {warm_wall:.1f} s wall, "
        f"of which Prefect start-up {warm['prefect_startup_s']:.1f} s"
    )
    print(f"\nmachine load while measuring (os.getloadavg, 1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
