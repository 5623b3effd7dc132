"""95 % intervals for every reported number: a group (cluster) bootstrap over items, a t-interval over seeds.

- :func:`bootstrap` resamples *groups* of rows with replacement (all clips that share a face source, a
  voice source or a speaker move together; with ``groups=None`` each row is its own group) and returns
  the point estimate on the full data with the percentile interval of the statistic over ``n_boot``
  resamples. A resample on which the statistic is undefined (NaN: a subset drawn empty) is left out; the
  count of usable resamples is returned so a caller can say when the interval rests on few of them.
- :func:`seed_interval` is the Student-t interval of a mean over independent runs (seeds):
  ``mean ± t_{0.975, n-1} · s / sqrt(n)``; one run gives no interval (NaN bounds).
- :func:`bootstrap_se` is the standard deviation of the statistic over the resamples (the calibration
  rule's tolerance, see :mod:`mosear.model.calibrate`).

The seed of the resampler is fixed (``seed=0``): the same table gives the same interval on every run.

**Shared units: speakers (or source takes) as crossed factors.** On a mined benchmark an item belongs to
the people (or the recordings) it is made of: a natural clip to its speaker, a spliced clip to the person
whose face it shows and the person whose voice it plays (the same person in a same-actor splice). A
group name ``"face=<a>|voice=<b>"`` (:func:`crossed_group`) names those two units; every table of such
names is resampled over **one pool of units** (all faces and voices together: a RAVDESS actor is one
person in both roles): each resample draws ``U`` units with replacement out of the ``U`` in the table,
and an item is drawn (count of its face unit) x (count of its voice unit) times, a unit that is both its
face and its voice counted **once** (a natural clip, a same-actor splice). With face and voice always
different this is Owen's pigeonhole bootstrap for crossed factors (2007, Ann. Appl. Stat. 1(2)) over a
common pool; counting a natural clip's unit once is the fix of issue 21 (it used to be drawn as two
independent factors, its take twice, which made intervals conservative with no actor effect). Joining
every item sharing a face *or* a voice into one group instead makes one giant group (no spread).
Rows of one table are all crossed (every group name holds ``|``) or all one-way.

**Small-sample correction (expanded percentile interval).** With few units a percentile interval is too
narrow: the bootstrap spread of a mean over ``G`` clusters is ``(G-1)/G`` of its variance, and the normal
quantile is used where a t quantile with ``G-1`` degrees of freedom belongs. Every percentile interval
here is therefore taken at the expanded level of Hesterberg (2015, *What teachers should know about the
bootstrap*, Am. Stat. 69(4)): the tail probability ``alpha' / 2 = 1 - Phi(sqrt(G/(G-1)) * t_{G-1}(1 - alpha/2))``,
``G`` = units resampled (groups; the pool's size for crossed names). Its use here is our choice (the paper
reports no intervals); ``benchmarks/interval_coverage.py`` measures the coverage it gives (docs/evaluation.md).
With fewer than two units, or when every row is made of the same units, the data cannot show any spread:
the interval is NaN, never zero-width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Interval", "bootstrap", "bootstrap_se", "seed_interval", "group_codes", "resample_weights",
           "percentile_bounds", "expanded_level", "crossed_group", "can_resample", "n_units", "N_BOOT",
           "resampling_groups"]

N_BOOT = 2000  # percentile bootstrap: 2000 resamples keep the 2.5 % / 97.5 % quantiles stable to ~0.005


@dataclass(frozen=True)
class Interval:
    value: float  # the statistic on all rows (or the mean over seeds)
    ci_low: float
    ci_high: float
    n: int  # rows (bootstrap) or seeds (seed_interval)
    n_groups: int = 0  # groups resampled (bootstrap); 0 for seed intervals
    n_valid: int = 0  # resamples on which the statistic was defined

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}value": self.value, f"{prefix}ci_low": self.ci_low, f"{prefix}ci_high": self.ci_high}

    def __str__(self) -> str:
        if np.isnan(self.value):
            return "n/a"
        if np.isnan(self.ci_low):
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


def crossed_group(face: str, voice: str) -> str:
    """The group name of a row in a crossed face × voice design (see the module docstring)."""
    return f"face={face}|voice={voice}"


def group_codes(df: pd.DataFrame, groups: str | Sequence | None) -> np.ndarray:
    """Each row's resampling units: int64 ``[n_rows]`` group codes 0..G-1 (sorted group names; ``None``: one
    per row), or, when every name is a :func:`crossed_group`, int64 ``[n_rows, 2]``: (face unit, voice unit)
    codes into **one** pool of units (both roles factorised together), the voice code -1 where it is the
    same unit as the face (counted once)."""
    if groups is None:
        return np.arange(len(df))
    keys = (df[groups] if isinstance(groups, str) else pd.Series(list(groups), index=df.index)).astype(str)
    if len(keys) and keys.str.contains("|", regex=False).all():
        parts = keys.str.split("|", n=1, expand=True)
        face = parts[0].str.replace("face=", "", n=1, regex=False).to_numpy()
        voice = parts[1].str.replace("voice=", "", n=1, regex=False).to_numpy()
        codes, _ = pd.factorize(np.concatenate([face, voice]), sort=True)
        f, v = codes[: len(face)], codes[len(face):]
        return np.stack([f, np.where(v == f, -1, v)], 1).astype(np.int64)
    return pd.factorize(keys, sort=True)[0]


def n_units(codes: np.ndarray) -> int:
    """How many units a resample draws: the groups (one-way) or the pool of faces and voices (crossed)."""
    codes = np.asarray(codes)
    return int(codes.max()) + 1 if codes.size else 0


def can_resample(codes: np.ndarray) -> bool:
    """Whether a bootstrap over these units can show any spread: >= 2 units, and (crossed) rows made of
    different units."""
    codes = np.asarray(codes)
    if n_units(codes) < 2:
        return False
    return codes.ndim == 1 or len(np.unique(codes, axis=0)) >= 2


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """float64 ``[b, n]``: how often each of ``n`` groups is drawn in each of ``b`` resamples of ``n`` draws."""
    picks = rng.integers(0, n, (b, n)) if n else np.zeros((b, 0), np.int64)
    flat = (picks + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def resample_weights(codes: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, chunk: int = 256):
    """Yield float64 ``[b, n_rows]`` blocks (``b <= chunk``, ``n_boot`` rows in all): how often each row is
    drawn in each resample of a group bootstrap (one-way codes: a row's count is its group's) or of the
    shared-pool bootstrap (crossed ``[n_rows, 2]`` codes: the product of its face unit's and its voice unit's
    counts, a unit in both roles counted once).

    The draws are those of :func:`bootstrap` (``rng.integers(0, G, G)`` per resample, same seed), so a
    statistic written as weighted sums over these rows (a vectorised accuracy, F1, mean) gives exactly
    :func:`bootstrap`'s replicates, at a fraction of the cost: no DataFrame per resample.
    """
    codes = np.asarray(codes, dtype=np.int64)
    units = n_units(codes)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        counts = _counts(rng, b, units)
        if codes.ndim == 1:
            yield counts[:, codes]
        else:
            with_one = np.hstack([counts, np.ones((b, 1))])  # code -1 (same unit as the face) reads the 1
            yield counts[:, codes[:, 0]] * with_one[:, codes[:, 1]]
        done += b


def expanded_level(level: float, units: int | None) -> float:
    """The coverage level at which to take percentiles so that ``level`` holds with ``units`` clusters
    (Hesterberg's expanded percentile interval, module docstring); ``level`` itself without ``units``."""
    if not units or units < 2:
        return level
    from scipy import stats

    z = math.sqrt(units / (units - 1)) * stats.t.ppf(0.5 + level / 2, units - 1)
    return float(1 - 2 * stats.norm.sf(z))


def percentile_bounds(reps: np.ndarray, level: float = 0.95, units: int | None = None) -> tuple[float, float]:
    """Percentile interval of replicates (NaN ones left out) at :func:`expanded_level` for ``units``
    resampled units; NaN bounds with fewer than 2 usable."""
    reps = np.asarray(reps, dtype=float)
    reps = reps[~np.isnan(reps)]
    if len(reps) < 2:
        return float("nan"), float("nan")
    alpha = (1 - expanded_level(level, units)) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _replicates(df: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], groups: str | Sequence | None,
                n_boot: int, seed: int) -> np.ndarray:
    codes = group_codes(df, groups)
    if codes.ndim == 2:  # crossed: each row repeated (face unit's count) x (voice unit's count) times
        out = []
        for W in resample_weights(codes, n_boot, seed):
            for w in W:
                out.append(statistic(df.iloc[np.repeat(np.arange(len(df)), w.astype(np.int64))]))
        return np.asarray(out, dtype=float)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    members = [np.flatnonzero(codes == g) for g in range(n_groups)]
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, n_groups, n_groups)
        rows = np.concatenate([members[g] for g in pick]) if n_groups else np.zeros(0, dtype=int)
        out[b] = statistic(df.iloc[rows])
    return out


def bootstrap(df: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], groups: str | Sequence | None = None,
              n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> Interval:
    """Point value and percentile ``level`` interval of ``statistic(df)`` under a group bootstrap.

    ``groups``: a column name of ``df`` (or one value per row) naming each row's resampling group.
    """
    value = float(statistic(df)) if len(df) else float("nan")
    codes = group_codes(df, groups) if len(df) else np.zeros(0, np.int64)
    n_groups = n_units(codes)
    if len(df) == 0 or np.isnan(value) or not can_resample(codes):
        return Interval(value, float("nan"), float("nan"), len(df), n_groups, 0)
    reps = _replicates(df, statistic, groups, n_boot, seed)
    reps = reps[~np.isnan(reps)]
    if len(reps) < 2:
        return Interval(value, float("nan"), float("nan"), len(df), n_groups, len(reps))
    lo, hi = percentile_bounds(reps, level, n_groups)
    return Interval(value, lo, hi, len(df), n_groups, len(reps))


def bootstrap_se(df: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], groups: str | Sequence | None = None,
                 n_boot: int = N_BOOT, seed: int = 0) -> float:
    """Standard error of ``statistic`` under the same group bootstrap (NaN with < 2 usable resamples)."""
    if len(df) == 0:
        return float("nan")
    reps = _replicates(df, statistic, groups, n_boot, seed)
    reps = reps[~np.isnan(reps)]
    return float(reps.std(ddof=1)) if len(reps) >= 2 else float("nan")


def seed_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean over runs with its Student-t interval (NaN values, e.g. an empty subset in one run, left out)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, float("nan"), float("nan"), 1)
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, len(x))


def resampling_groups(df: pd.DataFrame) -> pd.Series:
    """One resampling group name per row: ``group`` where set, else the row's key (in a crossed table,
    :func:`~mosear.evaluate.intervals.crossed_group` of the key with itself: its own face and voice)."""
    keys = df["key"].astype(str) if "key" in df else pd.Series([str(i) for i in range(len(df))], index=df.index)
    if "group" in df:
        g = df["group"]
        if g.notna().any() and g.dropna().astype(str).str.contains("|", regex=False).all():
            keys = keys.map(lambda k: crossed_group(k, k))
        return g.where(g.notna(), keys).astype(str)
    return keys
