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

**Crossed sources** (spliced clips: every face paired with many voices and every voice with many faces).
Joining every clip that shares a face *or* a voice into one group makes one giant group on a spliced
split (the sample's test split is a single component), and a bootstrap over one group has no spread: it
returned zero-width intervals. A group name of the form ``"face=<a>|voice=<b>"`` therefore marks a
*crossed* design, resampled with the pigeonhole bootstrap (Owen, 2007, *The pigeonhole bootstrap*, Ann.
Appl. Stat. 1(2)): each resample draws the faces with replacement and, independently, the voices; a row
is drawn (count of its face) × (count of its voice) times. It is mildly conservative for crossed random
effects (Owen's result); using it here is our choice, not the paper's. Rows of one table are all
crossed (every group name holds ``|``) or all one-way. With fewer than two groups (one-way) or fewer
than two levels in both factors (crossed) the data cannot show any spread: the interval is NaN, never
zero-width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Interval", "bootstrap", "bootstrap_se", "seed_interval", "group_codes", "resample_weights",
           "percentile_bounds", "crossed_group", "can_resample", "N_BOOT"]

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
    """Each row's resampling group: int64 ``[n_rows]`` codes 0..G-1 (sorted group names; ``None``: one per
    row), or int64 ``[n_rows, 2]`` (face code, voice code) when every name is a :func:`crossed_group`."""
    if groups is None:
        return np.arange(len(df))
    keys = (df[groups] if isinstance(groups, str) else pd.Series(list(groups), index=df.index)).astype(str)
    if len(keys) and keys.str.contains("|", regex=False).all():
        parts = keys.str.split("|", n=1, expand=True)
        return np.stack([pd.factorize(parts[0], sort=True)[0], pd.factorize(parts[1], sort=True)[0]], 1)
    return pd.factorize(keys, sort=True)[0]


def _levels(codes: np.ndarray) -> list[int]:
    """Levels per factor: ``[G]`` one-way, ``[F, V]`` crossed."""
    if codes.ndim == 1:
        return [int(codes.max()) + 1 if len(codes) else 0]
    return [int(codes[:, j].max()) + 1 if len(codes) else 0 for j in range(codes.shape[1])]


def can_resample(codes: np.ndarray) -> bool:
    """Whether a bootstrap over these groups can show any spread (>= 2 groups, or >= 2 levels of a factor)."""
    return max(_levels(np.asarray(codes)), default=0) >= 2


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """float64 ``[b, n]``: how often each of ``n`` groups is drawn in each of ``b`` resamples of ``n`` draws."""
    picks = rng.integers(0, n, (b, n)) if n else np.zeros((b, 0), np.int64)
    flat = (picks + np.arange(b)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def resample_weights(codes: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, chunk: int = 256):
    """Yield float64 ``[b, n_rows]`` blocks (``b <= chunk``, ``n_boot`` rows in all): how often each row is
    drawn in each resample of a group bootstrap (one-way codes) or of the pigeonhole bootstrap (crossed
    ``[n_rows, 2]`` codes: the product of its face's and its voice's counts).

    The draws are those of :func:`bootstrap` (``rng.integers(0, G, G)`` per resample, same seed; crossed:
    the faces' draws, then the voices'), so a statistic written as weighted sums over these rows (a
    vectorised accuracy, F1, mean) gives exactly :func:`bootstrap`'s replicates, at a fraction of the
    cost: no DataFrame per resample.
    """
    codes = np.asarray(codes, dtype=np.int64)
    levels = _levels(codes)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        if codes.ndim == 1:
            yield _counts(rng, b, levels[0])[:, codes]
        else:
            w = np.ones((b, len(codes)))
            for j, n in enumerate(levels):
                w *= _counts(rng, b, n)[:, codes[:, j]]
            yield w
        done += b


def percentile_bounds(reps: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of replicates (NaN ones left out); NaN bounds with fewer than 2 usable."""
    reps = np.asarray(reps, dtype=float)
    reps = reps[~np.isnan(reps)]
    if len(reps) < 2:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _replicates(df: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], groups: str | Sequence | None,
                n_boot: int, seed: int) -> np.ndarray:
    codes = group_codes(df, groups)
    if codes.ndim == 2:  # crossed: each row repeated (face count) x (voice count) times
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
    n_groups = int(pd.Series(df[groups] if isinstance(groups, str) else groups).nunique()) if groups is not None and len(df) else len(df)
    if len(df) == 0 or np.isnan(value) or not can_resample(group_codes(df, groups)):
        return Interval(value, float("nan"), float("nan"), len(df), n_groups, 0)
    reps = _replicates(df, statistic, groups, n_boot, seed)
    reps = reps[~np.isnan(reps)]
    if len(reps) < 2:
        return Interval(value, float("nan"), float("nan"), len(df), n_groups, len(reps))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return Interval(value, float(lo), float(hi), len(df), n_groups, len(reps))


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
