"""Coverage of the evaluation's 95 % intervals when items share people (actor effects), by simulation.

    PYTHONPATH=$PWD python3 benchmarks/interval_coverage.py            # 1000 repetitions per cell (~1-2 min)
    PYTHONPATH=$PWD python3 benchmarks/interval_coverage.py --reps 200 # quicker, coarser

**What is simulated** (RAVDESS-style, as issue 21 describes it): ``G`` actors, each with ``--natural``
natural clips and ``--splices`` same-actor face x voice splices (face person = voice person), and, with
``--cross`` > 0, that many splices per actor whose voice is another actor's (CREMA-D-style swaps: the item
belongs to two people). Actor ``a`` has a random effect ``u_a ~ N(0, sd^2)`` on the logit scale; an item's
0/1 outcome (right answer, or "followed the voice") is Bernoulli(sigmoid(``mu`` + effects of its people)),
with ``mu`` = logit(0.65). The reported number is the mean outcome over the items; its target is the mean
over a new draw of actors, i.e. ``E[sigmoid(mu + u)]`` (``E[sigmoid(mu + (u_f + u_v)/sqrt 2)]`` for a
cross-actor item), computed by Gauss-Hermite quadrature.

**What is measured**: how often the interval of :mod:`mosear.evaluate.resampled` (units = the people,
:func:`~mosear.evaluate.intervals.crossed_group` of face and voice person, 2000 resamples, seed 0) holds
the target: ``expanded`` (what the evaluation reports: Hesterberg's expanded percentile level for ``G``
units) against ``plain`` (the percentile interval at 95 %, from the same resamples: the baseline), each
with its Wilson 95 % interval over repetitions. Writes ``benchmarks/out/interval_coverage.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosear.evaluate.intervals import (crossed_group, group_codes, n_units, percentile_bounds,  # noqa: E402
                                      resample_weights)

MU = math.log(0.65 / 0.35)


def target(sd: float, cross_share: float) -> float:
    """Population mean outcome: E over actor effects of sigmoid(mu + effect), by Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    same = float((w / (1 + np.exp(-(MU + sd * x)))).sum())
    cross = same  # (u_f + u_v) / sqrt(2) has the same sd as u: the same mean
    return (1 - cross_share) * same + cross_share * cross


def one_rep(rng: np.random.Generator, actors: int, sd: float, natural: int, splices: int, cross: int,
            n_boot: int) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """One simulated benchmark: (value, expanded interval, plain interval)."""
    u = rng.normal(0.0, sd, actors)
    faces, voices, logits = [], [], []
    for a in range(actors):
        for _ in range(natural + splices):
            faces.append(a), voices.append(a), logits.append(MU + u[a])
        for _ in range(cross):
            b = (a + 1 + rng.integers(actors - 1)) % actors
            faces.append(a), voices.append(b), logits.append(MU + (u[a] + u[b]) / math.sqrt(2))
    hit = (rng.random(len(logits)) < 1 / (1 + np.exp(-np.asarray(logits)))).astype(np.float64)
    groups = [crossed_group(f"person:{f}", f"person:{v}") for f, v in zip(faces, voices)]
    codes = _codes(groups)
    reps = np.concatenate([(W @ hit) / W.sum(1) for W in resample_weights(codes, n_boot)])
    return float(hit.mean()), percentile_bounds(reps, 0.95, n_units(codes)), percentile_bounds(reps, 0.95)


def _codes(groups: list[str]) -> np.ndarray:
    import pandas as pd

    return group_codes(pd.DataFrame({"g": groups}), "g")


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="simulated benchmarks per cell")
    ap.add_argument("--actors", default="3,5,8,12,16")
    ap.add_argument("--sd", default="0,0.5,1,2", help="actor effect sd (logit scale)")
    ap.add_argument("--natural", type=int, default=4, help="natural clips per actor")
    ap.add_argument("--splices", type=int, default=6, help="same-actor splices per actor")
    ap.add_argument("--cross", type=int, default=0, help="cross-actor splices per actor (two people per item)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/interval_coverage.json"))
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    per_actor = args.natural + args.splices + args.cross
    print("| actors | actor sd | items | target | expanded coverage [Wilson 95 %] | plain coverage | mean width (expanded / plain) |")
    print("|---|---|---|---|---|---|---|")
    for g in [int(x) for x in args.actors.split(",")]:
        for sd in [float(x) for x in args.sd.split(",")]:
            rng = np.random.default_rng([args.seed, g, int(sd * 100)])
            truth = target(sd, args.cross / per_actor)
            k_exp = k_plain = 0
            w_exp, w_plain = [], []
            for _ in range(args.reps):
                _v, (lo, hi), (plo, phi) = one_rep(rng, g, sd, args.natural, args.splices, args.cross, args.n_boot)
                k_exp += lo <= truth <= hi
                k_plain += plo <= truth <= phi
                w_exp.append(hi - lo), w_plain.append(phi - plo)
            row = {"actors": g, "sd": sd, "items": g * per_actor, "target": truth, "reps": args.reps,
                   "expanded": k_exp / args.reps, "expanded_ci": wilson(k_exp, args.reps),
                   "plain": k_plain / args.reps, "plain_ci": wilson(k_plain, args.reps),
                   "width_expanded": float(np.nanmean(w_exp)), "width_plain": float(np.nanmean(w_plain))}
            rows.append(row)
            lo, hi = row["expanded_ci"]
            print(f"| {g} | {sd:g} | {row['items']} | {truth:.3f} | {row['expanded']:.3f} [{lo:.3f}, {hi:.3f}] | "
                  f"{row['plain']:.3f} | {row['width_expanded']:.3f} / {row['width_plain']:.3f} |", flush=True)
    elapsed = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from mosear.atomic import atomic_write_json

    atomic_write_json(args.out, {"command": " ".join(["benchmarks/interval_coverage.py", *(argv if argv is not None else sys.argv[1:])]),
                                 "elapsed_s": elapsed, "load_avg": list(os.getloadavg()), "rows": rows}, indent=1)
    print(f"\n{elapsed:.0f} s, load {os.getloadavg()[0]:.1f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
