"""Cost of the 95 % intervals of one evaluation unit: the vectorised resampling of every metric
(``mosear.evaluate.resampled.unit_intervals``) against the plain group bootstrap of ONE metric
(``mosear.evaluate.intervals.bootstrap``, a DataFrame per resample), measured in the same run.

    python benchmarks/interval_cost.py [--rows 1000] [--boot 2000]

Prints a markdown table; the ratio column is time / the vectorised time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosear.evaluate.intervals import bootstrap  # noqa: E402
from mosear.evaluate.resampled import resampling_groups, unit_intervals  # noqa: E402

LABELS = ["neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "disgust", "calm", "contempt", "doubt"]


def table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.choice(LABELS, n)
    pred = np.where(rng.random(n) < 0.5, label, rng.choice(LABELS, n))
    return pd.DataFrame({"key": [f"k{i}" for i in range(n)], "label": label, "pred_label": pred,
                         "subset": rng.choice(["consistent", "video_aligned", "audio_aligned", "ambiguous"], n),
                         "group": [f"g{i // 3}" for i in range(n)], "error": None,
                         "ov_precision": rng.random(n), "ov_recall": rng.random(n), "share_audio": rng.random(n),
                         "share_visual": rng.random(n), "share_text": rng.random(n)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=2000)
    args = ap.parse_args()
    df = table(args.rows)
    t0 = time.perf_counter()
    bounds = unit_intervals(df, n_boot=args.boot)
    vec = time.perf_counter() - t0
    groups = resampling_groups(df).tolist()
    t0 = time.perf_counter()
    bootstrap(df, lambda d: float((d["label"] == d["pred_label"]).mean()), groups=groups, n_boot=args.boot)
    loop = time.perf_counter() - t0
    print(f"## intervals of one unit: {args.rows} items, {args.rows // 3} groups, {args.boot} resamples "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})\n")
    print("| method | statistics | seconds | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| vectorised, every metric (`unit_intervals`) | {len(bounds)} | {vec:.2f} | 1.00 |")
    print(f"| loop bootstrap, overall accuracy only (`bootstrap`) | 1 | {loop:.2f} | {loop / vec:.1f} |")


if __name__ == "__main__":
    main()
