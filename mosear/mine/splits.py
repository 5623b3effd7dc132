"""Person-disjoint train / validation / test splits of the mined benchmark (DESIGN.md §3 "Mined output").

Every row of ``conflicts.parquet`` gets ``split`` ∈ {train, validation, test, unassigned} so that no
source take (face source or voice source) and, under the default grouping, no person (as face or as
voice) is in two splits.

**Nodes and groups.** Each row names a face source (``face_take``) and a voice source (``voice_take``);
for a natural clip both are the clip's own take, for a spliced clip they are two different recordings.
A RAVDESS audio-only take and the full-AV clip of the same codes are one take (one performance), so a
splice whose voice is that take is tied to the natural clip. A union-find joins every source with the
row's grouping keys, so a connected component is a set of sources that must share a split:
``speaker``: the face's person (``face_person``, else ``speaker``) with the face source, the voice's
person (``voice_person``) with the voice source, and the face with the voice (a row is never split: a
CREMA-D 1001-face x 1002-voice swap ties both people into one group); ``statement``: the spoken
sentence (transcript) with each source; ``take``: sources only. Under ``statement`` and ``take`` the
face and voice of a spliced clip are *not* joined: a splice is an edge between two components, and it
belongs to a split only when both of its components landed there; otherwise it stays ``unassigned``
(kept, counted).

**Choosing the grouping.** ``group_by`` lists groupings in order of preference (default
``[speaker, take]``). A grouping is *usable* when every split with a positive ratio receives at least
half of its target share of the placed rows; ``speaker`` is usable whenever the corpus has two people or
more and no split is left empty (the ratios bend to the people instead, with a warning: keeping people
apart comes first); the first usable one is taken, and
each one passed over is named with the reason in :attr:`SplitResult.fallbacks` and the summary's
warnings. A one-person corpus cannot be split by person: it falls back to source takes and the warnings
say that the splits are not person-disjoint. When none is usable the last is used, with a warning.

**Assignment** (deterministic for the same rows and config; ours, in the spirit of scikit-learn's
``StratifiedGroupKFold``): people pinned with ``assign`` are placed first, in their split (a group
holding people pinned to two splits is an error). A component weighs its own rows plus half of each
splice that reaches another component, per subset. Components are visited heaviest first (ties broken
by a hash of their root salted with ``seed``); each goes to the split s maximising
``Σ_k placed_k(s) · (fair_sk − load_sk) / fair_sk``: the rows it would place in s (its own rows and the
splices whose other end already sits in s), per subset k, each weighed by the share of s's fair part of
k still missing (fair_sk = ratio_s · rows of k placed anywhere once these are; load_sk = rows of k in s
so far; the weight turns negative once s holds more than its part). Ties go to the split furthest below
its share of all placed rows, then to the one that places more rows, then in the order train,
validation, test. Then, under ``speaker``, a split holding fewer people than ``min_people`` asks
(default validation 1, test 2) receives the smallest unpinned groups of splits that keep their own
minimum; a split still short is a note and a warning. :attr:`SplitResult.people` names the people of
each split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # pandas is imported where it is used: MineConfig (and `mosear --help`) need only SplitConfig
    import pandas as pd

__all__ = ["SPLITS", "UNASSIGNED", "SplitConfig", "SplitResult", "assign_splits", "split_warnings"]

SPLITS = ("train", "validation", "test")
UNASSIGNED = "unassigned"
Grouping = Literal["speaker", "statement", "take"]


class SplitConfig(BaseModel):
    """Ratios and grouping of the mined benchmark's splits (``splits:`` in the mine config)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train: float = Field(0.6, ge=0, le=1, description="share of the rows for training")
    validation: float = Field(0.2, ge=0, le=1, description="share for validation (AR calibration, model choice)")
    test: float = Field(0.2, ge=0, le=1, description="share for the reported test numbers")
    seed: int = Field(0, description="salts the order in which equally large groups are placed")
    group_by: list[Grouping] = Field(
        default_factory=lambda: ["speaker", "take"],
        description="groupings tried in order; the first that can fill every split is used. speaker: "
        "no person in two splits, as face or as voice (a splice ties its face's and its voice's person); "
        "statement: no spoken sentence in two splits; take: only face and voice sources kept apart (always "
        "kept apart, whatever the grouping)")
    assign: dict[Literal["train", "validation", "test"], list[str]] = Field(
        default_factory=dict, description="people (speaker ids, e.g. ravdess_09, crema_d_1001) pinned to a "
        "split under speaker grouping; the others are placed by the balancing search")
    min_people: dict[Literal["train", "validation", "test"], int] = Field(
        default_factory=lambda: {"validation": 1, "test": 2},
        description="fewest people a split must hold under speaker grouping; the search moves the smallest "
        "unpinned groups to meet it, a split still short is a warning")

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> "SplitConfig":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios train={self.train} validation={self.validation} test={self.test} "
                             f"sum to {total:g}, expected 1")
        if not self.group_by:
            raise ValueError("group_by needs at least one grouping (speaker, statement or take)")
        seen: dict[str, str] = {}
        for split, people in self.assign.items():
            for person in people:
                if person in seen and seen[person] != split:
                    raise ValueError(f"splits.assign: {person} is pinned to both {seen[person]} and {split}")
                seen[person] = split
        return self

    def ratios(self) -> dict[str, float]:
        return {s: float(getattr(self, s)) for s in SPLITS}


@dataclass
class SplitResult:
    """Per-row splits and how they were made."""

    splits: list[str]                     # one per input row, in row order
    grouping: str                         # the grouping used
    groups: int                           # connected components under it
    fallbacks: list[dict[str, str]] = field(default_factory=list)  # groupings passed over, with why
    unassigned_reason: dict[str, int] = field(default_factory=dict)
    people: dict[str, list[str]] = field(default_factory=dict)  # split -> people (faces and voices) in it
    notes: list[str] = field(default_factory=list)               # pins / minimums that could not be met

    @property
    def person_disjoint(self) -> bool:
        """No person (as face or as voice) in two splits."""
        seen: dict[str, str] = {}
        for split, people in self.people.items():
            for p in people:
                if seen.setdefault(p, split) != split:
                    return False
        return True

    def summary(self, cfg: SplitConfig) -> dict[str, Any]:
        return {"grouping": self.grouping, "requested": list(cfg.group_by), "fallbacks": self.fallbacks,
                "groups": self.groups, "ratios": cfg.ratios(), "seed": cfg.seed,
                "assign": {k: list(v) for k, v in cfg.assign.items()}, "min_people": dict(cfg.min_people),
                "people": {s: list(self.people.get(s, [])) for s in SPLITS},
                "person_disjoint": self.person_disjoint,
                "unassigned": sum(self.unassigned_reason.values()),
                "unassigned_reason": dict(self.unassigned_reason)}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the smaller name is the root: the result does not depend on the order of unions
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def _str(v: Any) -> str | None:
    """A non-empty string, else None (pandas holds a missing string as None or NaN)."""
    return v.strip() if isinstance(v, str) and v.strip() else None


def _statement(row: dict[str, Any]) -> str | None:
    text = _str(row.get("transcript"))
    return " ".join(text.lower().split()).strip(" .!?") if text else None


def _sources(row: dict[str, Any]) -> tuple[str, str]:
    face = _str(row.get("face_take")) or f"key:{row['key']}"
    voice = _str(row.get("voice_take")) or face
    return f"take:{face}", f"take:{voice}"


def _persons(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """The face's and the voice's person (``face_person`` / ``voice_person``, else ``speaker``)."""
    spk = _str(row.get("speaker"))
    return _str(row.get("face_person")) or spk, _str(row.get("voice_person")) or spk


def _components(rows: list[dict[str, Any]], grouping: str) -> tuple[_UnionFind, list[tuple[str, str]]]:
    uf = _UnionFind()
    ends = []
    for r in rows:
        f, v = _sources(r)
        uf.find(f)
        uf.find(v)
        if grouping == "speaker":  # a row's face and voice are people: both join, and a splice ties them
            fp, vp = _persons(r)
            if fp:
                uf.union(f, f"speaker:{fp}")
            if vp:
                uf.union(v, f"speaker:{vp}")
            if fp or vp:
                uf.union(f, v)
        if grouping == "statement" and _statement(r):  # face and voice each join it, not each other
            uf.union(f, f"statement:{_statement(r)}")
            uf.union(v, f"statement:{_statement(r)}")
        ends.append((f, v))
    return uf, [(uf.find(f), uf.find(v)) for f, v in ends]


def _people_of(rows: list[dict[str, Any]], ends: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Component -> the people whose faces or voices it holds."""
    out: dict[str, set[str]] = defaultdict(set)
    for r, (a, b) in zip(rows, ends):
        fp, vp = _persons(r)
        if fp:
            out[a].add(fp)
        if vp:
            out[b].add(vp)
    return out


def _salted(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def _assign(rows: list[dict[str, Any]], grouping: str, cfg: SplitConfig
            ) -> tuple[list[str], int, dict[str, int], list[str]]:
    _, ends = _components(rows, grouping)
    people = _people_of(rows, ends)
    notes: list[str] = []
    ratios = cfg.ratios()
    active = [s for s in SPLITS if ratios[s] > 0]
    subset_of = [str(r.get("subset")) for r in rows]

    own: dict[str, list[int]] = defaultdict(list)      # component -> rows lying wholly inside it
    cross: dict[str, list[int]] = defaultdict(list)    # component -> splices reaching another component
    for i, (a, b) in enumerate(ends):
        if a == b:
            own[a].append(i)
        else:
            cross[a].append(i)
            cross[b].append(i)

    def weight(c: str) -> dict[str, float]:
        """Rows of component c by subset: its own rows, and half of each splice to another component."""
        w: dict[str, float] = defaultdict(float)
        for i in own[c]:
            w[subset_of[i]] += 1.0
        for i in cross[c]:
            w[subset_of[i]] += 0.5
        return w

    weights = {c: weight(c) for c in set(own) | set(cross)}
    pinned: dict[str, str] = {}
    if grouping == "speaker":
        pin_of = {p: s for s, ps in cfg.assign.items() for p in ps}
        for c in weights:
            want = sorted({pin_of[p] for p in people.get(c, ()) if p in pin_of})
            if len(want) > 1:
                raise ValueError(f"splits.assign: {sorted(people[c])} are one group (a splice pairs their faces and "
                                 f"voices) but are pinned to {want}")
            if want and want[0] in active:
                pinned[c] = want[0]
        known = set().union(*people.values()) if people else set()
        absent = sorted(set(pin_of) - known)
        if absent:
            notes.append(f"splits.assign names {len(absent)} person(s) not in the corpus: {absent}")
    comps = sorted(weights, key=lambda c: (c not in pinned, -sum(weights[c].values()), _salted(cfg.seed, c)))
    where: dict[str, str] = {}
    load = {s: defaultdict(float) for s in active}
    placed: dict[str, float] = defaultdict(float)
    for c in comps:
        best, best_key, best_rows = None, None, []
        for order, s in enumerate(active):
            if c in pinned and s != pinned[c]:
                continue
            rows_in = list(own[c]) + [i for i in cross[c]
                                      if where.get(ends[i][1] if ends[i][0] == c else ends[i][0]) == s]
            gain: dict[str, int] = defaultdict(int)
            for i in rows_in:
                gain[subset_of[i]] += 1
            score = 0.0
            for k, n in gain.items():
                fair = ratios[s] * (placed[k] + n)  # s's share of subset k once these rows are placed
                score += n * (fair - load[s][k]) / fair
            total_fair = ratios[s] * (sum(placed.values()) + len(rows_in))
            overall = (total_fair - sum(load[s].values())) / total_fair if total_fair else 0.0
            key = (round(score, 9), round(overall, 9), len(rows_in), -order)
            if best_key is None or key > best_key:
                best, best_key, best_rows = s, key, rows_in
        where[c] = best
        for i in best_rows:
            load[best][subset_of[i]] += 1
            placed[subset_of[i]] += 1
    if grouping == "speaker" and 0 < len(weights) <= SEARCH_MAX_GROUPS:
        found = _search(weights, pinned, people, cfg, active)
        if found is not None:
            where = found
    if grouping == "speaker":
        notes += _meet_minimums(where, pinned, people, weights, cfg, active)
    out, reasons = [], defaultdict(int)
    for a, b in ends:
        if where.get(a) is not None and where.get(a) == where.get(b):
            out.append(where[a])
        else:
            out.append(UNASSIGNED)
            reasons["face and voice sources in different splits"] += 1
    return out, len(comps), dict(reasons), notes


SEARCH_MAX_GROUPS = 9  # up to 3**9 = 19,683 assignments: tried exhaustively (a small corpus's people)
# What evaluation needs of the splits, in the order it is weighed: AR calibration reads validation's
# aligned items; the report reads every accuracy subset and the splices of test.
NEEDS = (("validation", "video_aligned"), ("validation", "audio_aligned"), ("validation", "consistent"),
         ("test", "consistent"),
         ("test", "video_aligned"), ("test", "audio_aligned"), ("test", "spliced"))


def _search(weights: dict[str, dict[str, float]], pinned: dict[str, str], people: dict[str, set[str]],
            cfg: SplitConfig, active: list[str]) -> dict[str, str] | None:
    """Exhaustive search over the placements of a few groups (speaker grouping, every row inside one
    group): among those that respect the pins, leave no split empty and meet ``min_people``, the one
    that meets the most of :data:`NEEDS` (for subsets the corpus has), then whose row shares per subset
    are closest to the ratios, then by a hash salted with ``seed``. None when nothing is feasible."""
    import itertools

    comps = sorted(weights)
    ratios = cfg.ratios()
    subsets = sorted({k for w in weights.values() for k in w})
    total = {k: sum(w.get(k, 0.0) for w in weights.values()) for k in subsets}
    needs = [(s, k) for s, k in NEEDS if s in active and total.get(k, 0) > 0]
    best, best_key = None, None
    for combo in itertools.product(active, repeat=len(comps)):
        where = dict(zip(comps, combo))
        if any(pinned.get(c, w) != w for c, w in where.items()) or set(combo) != set(active):
            continue
        load = {s: defaultdict(float) for s in active}
        held = {s: set() for s in active}
        for c, s in where.items():
            for k, n in weights[c].items():
                load[s][k] += n
            held[s] |= people.get(c, set())
        if any(len(held[s]) < cfg.min_people.get(s, 0) for s in active):
            continue
        unmet = sum(load[s][k] == 0 for s, k in needs)
        dev = sum(abs(load[s][k] / total[k] - ratios[s]) * total[k] for s in active for k in subsets) / sum(total.values())
        key = (unmet, round(dev, 9), _salted(cfg.seed, ",".join(combo)))
        if best_key is None or key < best_key:
            best, best_key = where, key
    return best


def _meet_minimums(where: dict[str, str], pinned: dict[str, str], people: dict[str, set[str]],
                   weights: dict[str, dict[str, float]], cfg: SplitConfig, active: list[str]) -> list[str]:
    """Move the smallest unpinned groups into splits holding fewer people than ``cfg.min_people`` asks,
    from splits that keep their own minimum (deterministic); what stays short is returned as notes."""
    def count(s: str) -> int:
        return len(set().union(*[people.get(c, set()) for c, w in where.items() if w == s] or [set()]))

    notes = []
    for s in active:
        need = cfg.min_people.get(s, 0)
        while count(s) < need:
            movable = [c for c, w in where.items() if w != s and c not in pinned and people.get(c)
                       and count(w) - len(people[c]) >= cfg.min_people.get(w, 0)
                       and sum(1 for x in where.values() if x == w) > 1]
            if not movable:
                notes.append(f"splits: {s} holds {count(s)} person(s), fewer than min_people {need}: no group can "
                             "move there without leaving another split short")
                break
            c = min(movable, key=lambda c: (sum(weights[c].values()), _salted(cfg.seed, c)))
            where[c] = s
    return notes


def assign_splits(conflicts: pd.DataFrame, cfg: SplitConfig) -> SplitResult:
    """Splits for the rows of ``conflicts`` (columns ``key, subset, face_take, voice_take, speaker``,
    optionally ``transcript``); see the module docstring. Pure: the frame is not modified."""
    import pandas as pd

    rows = conflicts.to_dict("records")
    ratios = cfg.ratios()
    fallbacks: list[dict[str, str]] = []
    chosen = None
    for n, grouping in enumerate(cfg.group_by):
        splits, groups, reasons, notes = _assign(rows, grouping, cfg)
        counts = pd.Series(splits).value_counts().to_dict() if rows else {}
        n_placed = len(rows) - counts.get(UNASSIGNED, 0)
        short = [f"{s} {counts.get(s, 0)} of {n_placed} placed rows ({counts.get(s, 0) / max(n_placed, 1):.0%}, "
                 f"target {ratios[s]:.0%})" for s in SPLITS
                 if ratios[s] > 0 and counts.get(s, 0) < 0.5 * ratios[s] * n_placed]
        chosen = SplitResult(splits, grouping, groups, fallbacks, reasons, _split_people(rows, splits), notes)
        n_people = len(set().union(*chosen.people.values())) if chosen.people else 0
        if grouping == "speaker":  # people stay apart unless that leaves a split empty: ratios bend instead
            empty = [f"{s} empty" for s in SPLITS if ratios[s] > 0 and not counts.get(s, 0)]
            if n_people < 2 or empty:
                short = empty or short or [f"{n_people} person(s) in the corpus"]
            elif short:
                chosen.notes.append(f"splits: person grouping distorts the ratios ({'; '.join(short)})")
                short = []
        if not short:
            break
        why = f"{groups} group(s); it leaves {'; '.join(short)}"
        if grouping == "speaker":
            n_spk = conflicts["speaker"].dropna().nunique() if "speaker" in conflicts else 0
            why = f"{n_spk} speaker(s), {why}: speaker-disjoint splits impossible"
        last = n == len(cfg.group_by) - 1
        fallbacks.append({"grouping": grouping, "reason": why + ("" if not last else " (last choice: used anyway)")})
    assert chosen is not None  # group_by is never empty (validated)
    return chosen


def _split_people(rows: list[dict[str, Any]], splits: list[str]) -> dict[str, list[str]]:
    """Split -> sorted people whose face or voice is in it (unassigned rows left out)."""
    out: dict[str, set[str]] = {s: set() for s in SPLITS}
    for r, s in zip(rows, splits):
        if s in out:
            out[s].update(p for p in _persons(r) if p)
    return {s: sorted(v) for s, v in out.items()}


def split_warnings(conflicts: pd.DataFrame, result: SplitResult, cfg: SplitConfig,
                   subsets: tuple[str, ...]) -> list[str]:
    """Plain-language warnings for the summary: fallbacks, empty splits, splits missing a subset, and
    unassigned rows, each with its counts."""
    import pandas as pd

    out = []
    for fb in result.fallbacks:
        if fb["grouping"] != result.grouping:
            out.append(f"splits: grouping '{fb['grouping']}' passed over ({fb['reason']}); used "
                       f"'{result.grouping}' instead")
        else:
            out.append(f"splits: grouping '{fb['grouping']}' distorts the ratios ({fb['reason']})")
    out += result.notes
    if not result.person_disjoint:
        shared = sorted({p for s in SPLITS for p in result.people.get(s, [])
                         if sum(p in result.people.get(x, []) for x in SPLITS) > 1})
        out.append(f"splits: not person-disjoint: {len(shared)} of "
                   f"{len(set().union(*map(set, result.people.values())))} person(s) in more than one split "
                   f"({', '.join(shared[:5])}): test people are seen in training")
    elif result.grouping == "speaker":
        for s, need in cfg.min_people.items():
            have = len(result.people.get(s, []))
            if cfg.ratios()[s] > 0 and have < need and not any(s in n for n in result.notes):
                out.append(f"splits: {s} holds {have} person(s), fewer than min_people {need}")
    ratios = cfg.ratios()
    df = pd.DataFrame({"split": result.splits, "subset": conflicts["subset"].astype(str).tolist()})
    for s in SPLITS:
        if ratios[s] == 0:
            out.append(f"splits: {s} ratio is 0: no {s} split")
            continue
        part = df[df["split"] == s]
        if part.empty:
            out.append(f"splits: the {s} split is empty (0 of {len(df)} rows)")
            continue
        for k in subsets:
            total = int((df["subset"] == k).sum())
            if total and not (part["subset"] == k).any():
                where = ", ".join(f"{x} {int(((df['split'] == x) & (df['subset'] == k)).sum())}"
                                  for x in (*SPLITS, UNASSIGNED))
                out.append(f"splits: the {s} split has no {k} items ({total} in the corpus: {where})")
    n_un = result.splits.count(UNASSIGNED)
    if n_un:
        out.append(f"splits: {n_un} of {len(df)} rows unassigned (kept in conflicts.parquet with split="
                   f"unassigned): {result.unassigned_reason}")
    return out
