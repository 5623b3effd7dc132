"""Cross-fitted unimodal emotion classifiers.

For one modality's evidence ``X`` (float32[N, D], NaN = missing evidence) and per-row targets, the rows
are split into k folds by group (speaker, or source take when a corpus has too few speakers); each fold
is predicted by a model trained on the other folds only. Every clip therefore gets label probabilities
from a model that never saw that clip, nor (with speaker groups) its speaker.

Model: median imputation -> standardisation -> multinomial logistic regression with balanced class
weights (scikit-learn). Rows whose evidence is entirely missing get NaN probabilities (no prediction).

A fold whose training rows hold a single class has no classifier: it could only "predict" that class
with certainty, whatever the evidence. Its rows get NaN probabilities and ``uninformative = True``
(no prediction, never a confident cue), so subset assignment treats them as missing (``ambiguous``).
The model is deterministic (lbfgs, fixed seed, rows in input order): the same evidence gives the same
probabilities whatever order the shards were mined in.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mosear.labels import CANONICAL_LABELS, label_index


@dataclass
class CrossFitResult:
    """probs: float32[N, 11] over CANONICAL_LABELS (NaN rows: no prediction); accuracy over scored rows;
    uninformative: bool[N], rows of a fold that trained on one class (NaN probabilities); features: the
    evidence columns ``X`` was made of (set by the caller; mosear.mine.assemble)."""

    probs: np.ndarray
    n_folds: int
    grouping: str
    n_train_rows: int
    accuracy: float | None
    n_scored: int
    notes: list[str] = field(default_factory=list)
    uninformative: np.ndarray | None = None
    features: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.uninformative is None:
            self.uninformative = np.zeros(len(self.probs), bool)


def _model(c: float, seed: int):
    return make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed),
    )


def crossfit_predict(
    X: np.ndarray,
    targets: list[str | None],
    groups: list[str],
    n_folds: int = 5,
    c: float = 0.5,
    seed: int = 0,
    grouping: str = "speaker",
) -> CrossFitResult:
    """Out-of-fold class probabilities for every row of ``X``.

    ``targets``: canonical label per row (None: unlabelled, never trained on, still predicted);
    ``groups``: fold group per row (rows of a group are always in the same fold).
    """
    X = np.asarray(X, np.float32)
    n = len(X)
    probs = np.full((n, len(CANONICAL_LABELS)), np.nan, np.float32)
    has_ev = ~np.isnan(X).all(axis=1) if n else np.zeros(0, bool)
    y = np.array([t if t is not None else "" for t in targets], dtype=object)
    trainable = has_ev & (y != "")
    g = np.asarray(groups, dtype=object)
    notes: list[str] = []
    uninformative = np.zeros(n, bool)
    n_groups = len(set(g[trainable]))
    k = min(n_folds, n_groups)
    if k < 2:
        notes.append(f"cannot cross-fit: {n_groups} group(s) with evidence and labels")
        return CrossFitResult(probs, 0, grouping, int(trainable.sum()), None, 0, notes)
    idx = np.flatnonzero(has_ev)
    folds = GroupKFold(n_splits=k).split(idx, groups=g[idx])
    for train_pos, test_pos in folds:
        tr, te = idx[train_pos], idx[test_pos]
        tr = tr[trainable[tr]]
        classes = sorted(set(y[tr]))
        if len(classes) == 0:
            continue
        if len(classes) == 1:  # no classifier: "p = 1" for its one class would be a fake certainty
            uninformative[te] = True
            notes.append(f"a fold trained on one class only ({classes[0]}): its {len(te)} rows get no prediction")
            continue
        model = _model(c, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X[tr], y[tr])
        p = model.predict_proba(X[te])
        out = np.zeros((len(te), len(CANONICAL_LABELS)), np.float32)
        for j, cls in enumerate(model.classes_):
            out[:, label_index(cls)] = p[:, j]
        probs[te] = out
    scored = trainable & ~np.isnan(probs).any(axis=1)
    acc = None
    if scored.any():
        pred = np.array([CANONICAL_LABELS[i] for i in probs[scored].argmax(1)], dtype=object)
        acc = float(np.mean(pred == y[scored]))
    return CrossFitResult(probs, k, grouping, int(trainable.sum()), acc, int(scored.sum()), notes, uninformative)


def choose_groups(speakers: list[str | None], takes: list[str], n_folds: int) -> tuple[list[str], str]:
    """Speaker groups when every row has a speaker and there are at least ``n_folds`` of them, else
    source takes.

    A corpus with one speaker (the RAVDESS sample) cannot give speaker-disjoint folds; grouping by the
    source take still keeps every clip that reuses a take (spliced clips) out of its own training folds.
    """
    known = {s for s in speakers if s}
    if len(known) >= n_folds and all(speakers):
        return [str(s) for s in speakers], "speaker"
    return list(takes), f"source take ({len(known)} speaker(s) < {n_folds} folds: speaker-disjoint folds impossible)"
