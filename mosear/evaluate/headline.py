"""The method × subset table that opens the report and ends ``mosear run`` / ``mosear eval``, and the
one sentence computed from it.

Columns (per benchmark; every value with its 95 % group-bootstrap interval from ``metrics.parquet``):
accuracy on the consistent, video-aligned and audio-aligned subsets, accuracy on *all with a truth* (every
item of the split with a truth: the three subsets plus a mined split's ``ambiguous`` items, natural and
human-rated; splices never), the conflict gap (audio-aligned − video-aligned), the conflict-mean
((video-aligned + audio-aligned) / 2; ambiguous items are in neither), weighted F1 (over the same items as
"all with a truth") and the open-vocabulary set metric (mean of set precision and recall, all items).
Rows: the ``methods`` of the eval config (``name -> checkpoint/setting``), else every checkpoint × setting
without a modality removed; then, when the protocol record has one, the training-majority baseline
(:mod:`mosear.evaluate.baseline`).

The sentence states only comparisons the intervals support: above chance when the lower bound is above
``1 / #labels`` (and clear of the training-majority answer when above its value; said for the consistent
column and for "all with a truth"), one method better than another when their intervals do not overlap,
a modality bias when the gap's interval excludes 0; otherwise it says the difference is not resolved at
this n. A subset with no scored items is named first, in a warning (nothing silently empty).
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["COLUMNS", "method_table", "headline_sentence", "format_interval", "render_text"]

# Accuracy over every item with a truth of the split (consistent + video-aligned + audio-aligned + ambiguous;
# natural and human-rated): metrics' subset ``all`` (labelled rows; splices have no label). Weighted F1 too.
ALL_TRUTH = "all with a truth"

# (subset, metric) -> column title; the first three are CA-MER's subsets
COLUMNS: list[tuple[str, str, str]] = [
    ("consistent", "accuracy", "consistent"),
    ("video_aligned", "accuracy", "video-aligned"),
    ("audio_aligned", "accuracy", "audio-aligned"),
    ("all", "accuracy", ALL_TRUTH),
    ("all", "conflict_gap", "gap (A-V)"),
    ("all", "conflict_mean", "conflict-mean"),
    ("all", "weighted_f1", "weighted F1"),
    ("all", "ov_mean", "set metric"),
]

_N_COLUMNS = [c for c in COLUMNS if c[1] == "accuracy"]  # the columns that show their item count ``n {title}``


def _rows(m: pd.DataFrame, bench: str, methods: dict[str, str] | None) -> list[tuple[str, str, str]]:
    sel = m[m["benchmark"] == bench]
    if methods:
        out = []
        for name, ref in methods.items():
            ck, _, st = ref.partition("/")
            if ((sel["checkpoint"] == ck) & (sel["setting"] == st)).any():
                out.append((name, ck, st))
        if out:
            return out
    plain = sel[sel["drop"].isna()]
    return [(f"{c} · {s}", c, s) for c, s in sorted({(c, s) for c, s in zip(plain["checkpoint"], plain["setting"])})]


def _baseline_record(baseline: dict) -> dict[str, object]:
    """The training-majority row (:mod:`mosear.evaluate.baseline`) in :func:`method_table`'s columns."""
    rec: dict[str, object] = {"method": f"train majority ('{baseline['label']}')", "checkpoint": "",
                              "setting": "", "baseline": True}
    for subset, metric, title in COLUMNS:
        v = baseline["subsets"].get(subset) if metric == "accuracy" else baseline.get(metric)
        for suffix, key in (("", "value"), (" lo", "ci_low"), (" hi", "ci_high")):
            rec[f"{title}{suffix}"] = float(v[key]) if v and v.get(key) is not None else math.nan
    for subset, _m, title in _N_COLUMNS:
        rec[f"n {title}"] = int(baseline["subsets"].get(subset, {}).get("n", 0))
    return rec


def method_table(m: pd.DataFrame, bench: str, methods: dict[str, str] | None = None,
                 baseline: dict | None = None) -> pd.DataFrame:
    """One row per method: ``method, checkpoint, setting`` and per column ``{title}``, ``{title} lo``,
    ``{title} hi``, plus ``n consistent / n video-aligned / n audio-aligned / n all with a truth`` (items
    scored). With a
    ``baseline`` record (``protocol.json``'s ``baselines[bench]``), a last row for the training-majority
    answer, flagged ``baseline=True`` (the set metric does not apply to it: n/a)."""
    records = []
    sel = m[m["benchmark"] == bench]
    for name, ck, st in _rows(m, bench, methods):
        u = sel[(sel["checkpoint"] == ck) & (sel["setting"] == st)]
        rec: dict[str, object] = {"method": name, "checkpoint": ck, "setting": st}
        for subset, metric, title in COLUMNS:
            r = u[(u["subset"] == subset) & (u["metric"] == metric)]
            v = r.iloc[0] if len(r) else None
            rec[title] = float(v["value"]) if v is not None else math.nan
            rec[f"{title} lo"] = float(v["ci_low"]) if v is not None and "ci_low" in r else math.nan
            rec[f"{title} hi"] = float(v["ci_high"]) if v is not None and "ci_high" in r else math.nan
        for subset, _m, title in _N_COLUMNS:
            r = u[(u["subset"] == subset) & (u["metric"] == "n")]
            rec[f"n {title}"] = int(r["value"].iloc[0]) if len(r) else 0
        rec["baseline"] = False
        records.append(rec)
    if baseline and "label" in baseline:
        records.append(_baseline_record(baseline))
    return pd.DataFrame(records)


def format_interval(v: float, lo: float, hi: float, signed: bool = False) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    f = "{:+.2f}" if signed else "{:.2f}"
    if lo is None or math.isnan(lo):
        return f.format(v)
    return f"{f.format(v)} [{f.format(lo)}, {f.format(hi)}]"


def _cell(rec, title: str) -> str:
    return format_interval(rec[title], rec[f"{title} lo"], rec[f"{title} hi"], signed=title.startswith("gap"))


def _top(t: pd.DataFrame, col: str) -> pd.DataFrame:
    """The rows sharing the highest value of ``col`` (more than one: a tie, and said so)."""
    t = t.dropna(subset=[col])
    if t.empty:
        return t
    best = t[col].max()
    return t[(t[col] - best).abs() <= 1e-9]


def _names(rows: pd.DataFrame) -> str:
    names = [str(n) for n in rows["method"]]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _best_text(top: pd.DataFrame, col: str, what: str) -> str:
    """'X has the highest <what>, v [lo, hi]' or, for a tie, 'X and Y tie for the highest <what>, v'."""
    r = top.iloc[0]
    if len(top) == 1:
        return f"{r['method']} has the highest {what}, {_cell(r, col)}"
    same = all(_cell(o, col) == _cell(r, col) for _, o in top.iterrows())
    note = ("" if not same else ", no interval: too few people or items" if math.isnan(r[f"{col} lo"])
            else ", identical intervals")
    return (f"{_names(top)} tie for the highest {what} ({_cell(r, col) if same else format_interval(r[col], math.nan, math.nan)}"
            f"{note})")


def _bias(lo: float, hi: float, base: float | None, face: str, voice: str) -> tuple[str, bool]:
    """The verdict on a signed interval (positive = voice): resolved only when it excludes 0 *and* the
    training-majority answer's own value (a constant answer's gap comes from the subsets' label mix)."""
    side = voice if lo > 0 else face if hi < 0 else None
    if side is None:
        return "shows no resolved bias", False
    if base is not None and not math.isnan(base) and lo <= base <= hi:
        return "shows no resolved bias", True
    return side, False


def _accuracy_verdict(t: pd.DataFrame, b, col: str, what: str, chance: float, n_labels: int) -> str:
    """The best method on accuracy column ``col``: above chance or not (its lower bound against
    ``chance``), and clear of the training-majority row ``b`` or not (its lower bound against b's value)."""
    top = _top(t, col)
    if top.empty:
        return f"no method has a {what}"
    r = top.iloc[0]
    verdict = "above chance" if r[f"{col} lo"] > chance else "not distinguishable from chance"
    text = _best_text(top, col, what) + f", {verdict} ({chance:.2f} for {n_labels} labels)"
    if b is not None and not math.isnan(b[col]):
        beats = r[f"{col} lo"] > b[col]
        text += (f", and {'clear of' if beats else 'not clear of'} the {b['method']} answer "
                 f"({_cell(b, col)}{'' if beats else ': the label prior alone explains it'})")
    return text


def headline_sentence(t: pd.DataFrame, n_labels: int, pref: pd.DataFrame | None = None) -> str:
    """The sentence under the tables (module docstring): every verdict made against the training-majority row
    when the table has one; ties called ties. ``pref``: :func:`preference_table` (splices), optional."""
    base = t[t["baseline"].astype(bool)] if "baseline" in t else t.iloc[0:0]
    t = t[~t["baseline"].astype(bool)] if "baseline" in t else t
    if t.empty:
        return "No method has scores on this benchmark."
    b = base.iloc[0] if len(base) else None
    r0 = t.iloc[0]
    n = (f"n = {r0['n consistent']}/{r0['n video-aligned']}/{r0['n audio-aligned']} consistent/video-/audio-aligned "
         f"items, {r0[f'n {ALL_TRUTH}']} with a truth in all")
    if pref is not None and len(pref):
        n += f", {int(pref.iloc[0]['n'])} splices"
    empty = [title for _s, _m, title in COLUMNS[:3] if int(r0[f"n {title}"]) == 0]
    warn = (f"Warning: this split has no {' and no '.join(empty)} items, so "
            f"{'that column is' if len(empty) == 1 else 'those columns are'} n/a and no comparison uses "
            f"{'it' if len(empty) == 1 else 'them'}. ") if empty else ""
    chance = 1.0 / max(1, n_labels)
    parts = []
    parts.append(_accuracy_verdict(t, b, "consistent", "consistent accuracy", chance, n_labels))
    if int(r0[f"n {ALL_TRUTH}"]) > 0:
        what = f"accuracy on all {int(r0[f'n {ALL_TRUTH}'])} items with a truth"
        parts.append(_accuracy_verdict(t, b, ALL_TRUTH, what, chance, n_labels))
    cm = t.dropna(subset=["conflict-mean"])
    if len(cm) >= 1:
        top = _top(cm, "conflict-mean")
        best = top.iloc[0]
        others = cm[~cm["method"].isin(top["method"])]
        beaten = [o["method"] for _, o in others.iterrows() if best["conflict-mean lo"] > o["conflict-mean hi"]]
        tied = [o["method"] for _, o in others.iterrows() if o["method"] not in beaten]
        text = _best_text(top, "conflict-mean", "conflict-mean")
        if beaten:
            text += f", its interval clear of {', '.join(beaten)}'s"
        if tied:
            text += f", overlapping {', '.join(tied)}'s (not resolved at this n)"
        if b is not None and not math.isnan(b["conflict-mean"]):
            beats = best["conflict-mean lo"] > b["conflict-mean"]
            text += (f"; {'clear of' if beats else 'not clear of'} the {b['method']} answer's "
                     f"({_cell(b, 'conflict-mean')})")
        if len(cm) >= 2 or b is not None:
            parts.append(text)
    gaps = []
    base_gap = None if b is None else b["gap (A-V)"]
    for _, r in t.dropna(subset=["gap (A-V)"]).iterrows():
        verdict, prior = _bias(r["gap (A-V) lo"], r["gap (A-V) hi"], base_gap, "follows the face", "follows the voice")
        why = f"; the {b['method']} answer alone gives {base_gap:+.2f}" if prior else ""
        gaps.append(f"{r['method']} {verdict} (gap {_cell(r, 'gap (A-V)')}{why})")
    if gaps:
        parts.append("; ".join(gaps))
    if pref is not None and len(pref):
        pb = pref[pref["baseline"].astype(bool)]
        base_pi = None if pb.empty else pb.iloc[0]["preference index"]
        prefs = []
        for _, r in pref[~pref["baseline"].astype(bool)].dropna(subset=["preference index"]).iterrows():
            verdict, prior = _bias(r["preference index lo"], r["preference index hi"], base_pi,
                                   "follows the face", "follows the voice")
            why = f"; the training-majority answer alone gives {base_pi:+.2f}" if prior else ""
            prefs.append(f"{r['method']} {verdict} (preference index {_pcell(r, 'preference index')}{why})")
        if prefs:
            parts.append("on splices (no true emotion; which cue the answer named): " + "; ".join(prefs))
    small = min(int(r0["n consistent"]), int(r0["n video-aligned"]), int(r0["n audio-aligned"])) < 10
    caveat = " With fewer than 10 items in a subset these intervals are rough." if small else ""
    return warn + f"On this split ({n}): " + "; ".join(parts) + "." + caveat


PREF_COLUMNS: list[tuple[str, str]] = [("face_rate", "face"), ("voice_rate", "voice"), ("neither_rate", "neither"),
                                       ("preference_index", "preference index")]


def preference_table(m: pd.DataFrame, bench: str, methods: dict[str, str] | None = None,
                     baseline: dict | None = None) -> pd.DataFrame:
    """One row per method with splices scored: ``method, n`` and per :data:`PREF_COLUMNS` title the value,
    ``lo``, ``hi`` (rates of answers naming the face's emotion, the voice's, neither; index = voice - face);
    the training-majority row last (``baseline=True``). Empty when the benchmark has no splices."""
    sel = m[(m["benchmark"] == bench) & (m["subset"] == "spliced")]
    records = []
    for name, ck, st in _rows(m, bench, methods):
        u = sel[(sel["checkpoint"] == ck) & (sel["setting"] == st)]
        n = u[u["metric"] == "pref_n"]["value"]
        if n.empty:
            continue
        rec: dict[str, object] = {"method": name, "n": int(n.iloc[0]), "baseline": False}
        for metric, title in PREF_COLUMNS:
            r = u[u["metric"] == metric]
            for suffix, col in (("", "value"), (" lo", "ci_low"), (" hi", "ci_high")):
                rec[f"{title}{suffix}"] = float(r[col].iloc[0]) if len(r) and r[col].iloc[0] is not None else math.nan
        records.append(rec)
    if records and baseline and baseline.get("preference"):
        rec = {"method": f"train majority ('{baseline['label']}')", "baseline": True,
               "n": int(next(iter(baseline["preference"].values())).get("n", 0))}
        for metric, title in PREF_COLUMNS:
            v = baseline["preference"].get(metric) or {}
            for suffix, key in (("", "value"), (" lo", "ci_low"), (" hi", "ci_high")):
                rec[f"{title}{suffix}"] = float(v[key]) if v.get(key) is not None else math.nan
        records.append(rec)
    return pd.DataFrame(records)


def _pcell(rec, title: str) -> str:
    return format_interval(rec[title], rec[f"{title} lo"], rec[f"{title} hi"], signed=title == "preference index")


def render_pref_text(p: pd.DataFrame) -> str:
    """The preference table as fixed-width text."""
    titles = [c[1] for c in PREF_COLUMNS]
    rows = [["method", "splices", *titles]] + [[r["method"], str(r["n"]), *[_pcell(r, c) for c in titles]]
                                                for _, r in p.iterrows()]
    return _fixed(rows)


def _fixed(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_pref_html(p: pd.DataFrame) -> str:
    import html

    titles = [c[1] for c in PREF_COLUMNS]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", "splices", *titles])
    body = "".join("<tr>" + f"<td>{html.escape(str(r['method']))}</td><td>{r['n']}</td>"
                   + "".join(f"<td>{html.escape(_pcell(r, c))}</td>" for c in titles) + "</tr>"
                   for _, r in p.iterrows())
    return f'<table class="methods preference"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _heads(t: pd.DataFrame) -> list[str]:
    """Column headings: the titles, "all with a truth" with its item count (``n = 18``) when the rows agree."""
    ns = {int(v) for v in t.get(f"n {ALL_TRUTH}", pd.Series(dtype=int)) if v == v}
    n = f" (n = {ns.pop()})" if len(ns) == 1 else ""
    return [f"{c[2]}{n}" if c[2] == ALL_TRUTH else c[2] for c in COLUMNS]


def render_text(t: pd.DataFrame) -> str:
    """The table as fixed-width text (the terminal's last lines)."""
    titles = [c[2] for c in COLUMNS]
    return _fixed([["method", *_heads(t)]] + [[r["method"], *[_cell(r, c) for c in titles]] for _, r in t.iterrows()])


def render_html(t: pd.DataFrame) -> str:
    import html

    titles = [c[2] for c in COLUMNS]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *_heads(t)])
    body = "".join(
        "<tr>" + f"<td>{html.escape(str(r['method']))}</td>" + "".join(f"<td>{html.escape(_cell(r, c))}</td>" for c in titles) + "</tr>"
        for _, r in t.iterrows())
    return f'<table class="methods"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def evaluated_lines(root, bench: str | None = None) -> list[str]:
    """What was evaluated, in words, from ``protocol.json`` (``evaluated``, written by ``mosear eval``):
    checkpoints, each benchmark's split, items per subset and origin, the people (test actors), how the
    intervals resample, the settings, the settings skipped with their reasons."""
    from mosear.evaluate.protocol import read_protocol

    ev = (read_protocol(root) or {}).get("evaluated") or {}
    if not ev:
        return []
    out = []
    cks = ev.get("checkpoints") or {}
    if bench is None and cks:
        out.append("checkpoints: " + "; ".join(f"{n} = {p}" for n, p in cks.items()))
    if bench is None and ev.get("settings"):
        out.append("settings: " + "; ".join(ev["settings"]))
    for name, b in (ev.get("benchmarks") or {}).items():
        if bench is not None and name != bench:
            continue
        subs = ", ".join(f"{k} {v}" for k, v in sorted((b.get("subsets") or {}).items()))
        origins = ", ".join(f"{k} {v}" for k, v in sorted((b.get("origins") or {}).items()))
        line = f"benchmark {name} ({b.get('format')}, {b.get('path')}), split {b.get('split') or 'default'}: " \
               f"{b.get('items', 0)} items ({subs}" + (f"; by origin: {origins}" if origins else "") + ")"
        people = b.get("people") or []
        if people:
            line += f"; {len(people)} {'actor' if len(people) == 1 else 'actors'} of this split: {', '.join(people)}"
        out.append(line)
        how = b.get("resampled_by")
        out.append({"people": "intervals resample the people (speakers; a splice's face and voice person as "
                              "crossed units, a natural clip's speaker once)",
                    "takes": "intervals resample source recordings (takes), not people: the mined rows name no "
                             "speakers",
                    "items": "intervals resample items (no speakers or sources known)"}.get(how, f"intervals: {how}")
                   + ", 95 % expanded percentile bootstrap")
        if b.get("moved_splices"):
            out.append(f"{b['moved_splices']} spliced item(s) listed in accuracy subsets were scored for preference "
                       "instead (a splice has no true emotion)")
        for setting, reason in (b.get("skipped") or {}).items():
            out.append(f"setting {setting} not run on {name}: {reason}")
        for w in b.get("warnings") or []:
            out.append(f"mining summary: {w}")
    return out


def calibration_lines(root) -> list[str]:
    """For every unit whose setting was calibrated, what calibration chose, in words."""
    from mosear.evaluate.aggregate import current_unit_files, unit_meta

    out = []
    for f in current_unit_files(root):
        meta = unit_meta(f)
        cal = meta.get("calibration")
        if cal:
            out.append(f"{meta['checkpoint']}/{meta['setting']['name']} on {meta['benchmark']}: " + calibration_words(cal))
    return out


def calibration_words(cal: dict) -> str:
    """'AR off: no setting beat it on validation (...)' or 'AR on: threshold .., fraction .., share .., ...'."""
    rows = cal.get("table") or []
    items = ", ".join(f"{k} {v}" for k, v in sorted((cal.get("items") or {}).items()))
    base = next((r for r in rows if r.get("fraction") == 0), None)
    opts = ", ".join(f"{o.get('share')}/{o.get('direction')}" for o in cal.get("options") or []) or "mass/audio"
    where = f"on the {cal.get('split', 'validation')} split ({items}; {len(rows)} settings tried, variants {opts})"
    if float(cal.get("fraction", 0)) == 0:
        best = max((r for r in rows if r.get("fraction")), key=lambda r: r.get("conflict_mean", -1), default=None)
        tail = (f": conflict-mean without AR {base['conflict_mean']:.2f}, best AR setting {best['conflict_mean']:.2f}"
                if base and best else "")
        return f"AR off: no setting beat it {where}{tail}."
    chosen = next((r for r in rows if r.get("fraction") == cal["fraction"] and r.get("threshold") == cal["threshold"]
                   and r.get("share", "mass") == cal.get("share", "mass")
                   and r.get("direction", "audio") == cal.get("direction", "audio")), None)
    tail = (f": validation conflict-mean {chosen['conflict_mean']:.2f} against {base['conflict_mean']:.2f} without AR, "
            f"consistent {chosen['consistent']:.2f} against {base['consistent']:.2f}" if chosen and base else "")
    return (f"AR on: threshold {cal['threshold']:g}, fraction {cal['fraction']:g}, share {cal.get('share', 'mass')}, "
            f"direction {cal.get('direction', 'audio')}, chosen {where}{tail}.")


def print_tables(results_dir, file=None) -> bool:
    """Print the protocol warnings and what was evaluated, then per benchmark the accuracy table, the
    preference table (splices), the sentence, from a results folder (``metrics.parquet``,
    ``protocol.json``); False when there are no metrics."""
    import sys
    from pathlib import Path

    from mosear.evaluate.protocol import protocol_notes, read_protocol

    file = file or sys.stdout
    root = Path(results_dir)
    if not (root / "metrics.parquet").is_file():
        return False
    m = pd.read_parquet(root / "metrics.parquet")
    protocol = read_protocol(root)
    for note in protocol_notes(protocol):
        print(note, file=file)
    for line in calibration_lines(root):
        print(line, file=file)
    for bench in sorted(m["benchmark"].unique()):
        t = method_table(m, bench, (protocol or {}).get("methods") or None,
                         ((protocol or {}).get("baselines") or {}).get(bench))
        pref = preference_table(m, bench, (protocol or {}).get("methods") or None,
                                ((protocol or {}).get("baselines") or {}).get(bench))
        from mosear.evaluate.aggregate import current_unit_files, unit_meta

        n_labels = next((len(unit_meta(f).get("labels") or []) for f in current_unit_files(root)
                         if unit_meta(f)["benchmark"] == bench), 1) or 1
        print("", file=file)
        for line in evaluated_lines(root, bench):
            print(line, file=file)
        print(f"\n{bench}: accuracy on items with a truth (natural, human-rated), 95 % intervals", file=file)
        print(render_text(t), file=file)
        if len(pref):
            print(f"\n{bench}: preference on splices (which cue the answer named; index = voice - face)", file=file)
            print(render_pref_text(pref), file=file)
        print(headline_sentence(t, n_labels, pref), file=file)
    return True
