"""The method × subset table that opens the report and ends ``mosear run`` / ``mosear eval``, and the
one sentence computed from it.

Columns (per benchmark; every value with its 95 % group-bootstrap interval from ``metrics.parquet``):
accuracy on the consistent, video-aligned and audio-aligned subsets, the conflict gap (audio-aligned −
video-aligned), the conflict-mean ((video-aligned + audio-aligned) / 2) and the open-vocabulary set
metric (mean of set precision and recall, all items). Rows: the ``methods`` of the eval config
(``name -> checkpoint/setting``), else every checkpoint × setting without a modality removed; then, when
the protocol record has one, the training-majority baseline (:mod:`mosear.evaluate.baseline`).

The sentence states only comparisons the intervals support: above chance when the lower bound is above
``1 / #labels``, one method better than another when their intervals do not overlap, a modality bias when
the gap's interval excludes 0; otherwise it says the difference is not resolved at this n. A subset with
no scored items is named first, in a warning (nothing silently empty).
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["COLUMNS", "method_table", "headline_sentence", "format_interval", "render_text"]

# (subset, metric) -> column title
COLUMNS: list[tuple[str, str, str]] = [
    ("consistent", "accuracy", "consistent"),
    ("video_aligned", "accuracy", "video-aligned"),
    ("audio_aligned", "accuracy", "audio-aligned"),
    ("all", "conflict_gap", "gap (A-V)"),
    ("all", "conflict_mean", "conflict-mean"),
    ("all", "ov_mean", "set metric"),
]


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
    for subset, _m, title in COLUMNS[:3]:
        rec[f"n {title}"] = int(baseline["subsets"].get(subset, {}).get("n", 0))
    return rec


def method_table(m: pd.DataFrame, bench: str, methods: dict[str, str] | None = None,
                 baseline: dict | None = None) -> pd.DataFrame:
    """One row per method: ``method, checkpoint, setting`` and per column ``{title}``, ``{title} lo``,
    ``{title} hi``, plus ``n consistent / n video-aligned / n audio-aligned`` (items scored). With a
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
        for subset, _m, title in COLUMNS[:3]:
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


def headline_sentence(t: pd.DataFrame, n_labels: int) -> str:
    """One sentence from the table's numbers (see the module docstring)."""
    base = t[t["baseline"].astype(bool)] if "baseline" in t else t.iloc[0:0]
    t = t[~t["baseline"].astype(bool)] if "baseline" in t else t
    if t.empty:
        return "No method has scores on this benchmark."
    r0 = t.iloc[0]
    n = f"n = {r0['n consistent']}/{r0['n video-aligned']}/{r0['n audio-aligned']} consistent/video-/audio-aligned items"
    empty = [title for _s, _m, title in COLUMNS[:3] if int(r0[f"n {title}"]) == 0]
    warn = (f"Warning: this split has no {' and no '.join(empty)} items, so "
            f"{'that column is' if len(empty) == 1 else 'those columns are'} n/a and no comparison uses "
            f"{'it' if len(empty) == 1 else 'them'}. ") if empty else ""
    chance = 1.0 / max(1, n_labels)
    parts = []
    best_c = t.loc[t["consistent"].fillna(-1).idxmax()]
    if math.isnan(best_c["consistent"]):
        parts.append("no method has a consistent-subset accuracy")
    else:
        verdict = ("above chance" if best_c["consistent lo"] > chance else "not distinguishable from chance")
        text = (f"{best_c['method']} has the highest consistent accuracy, {_cell(best_c, 'consistent')}, "
                f"{verdict} ({chance:.2f} for {n_labels} labels)")
        if len(base) and not math.isnan(base.iloc[0]["consistent"]):
            b = base.iloc[0]
            beats = best_c["consistent lo"] > b["consistent hi"]
            text += (f", and {'clear of' if beats else 'not clear of'} the {b['method']} answer "
                     f"({_cell(b, 'consistent')}{'' if beats else ': the label prior alone explains it'})")
        parts.append(text)
    cm = t.dropna(subset=["conflict-mean"])
    if len(cm) >= 2:
        best = cm.loc[cm["conflict-mean"].idxmax()]
        others = cm[cm["method"] != best["method"]]
        beaten = [o["method"] for _, o in others.iterrows() if best["conflict-mean lo"] > o["conflict-mean hi"]]
        tied = [o["method"] for _, o in others.iterrows() if o["method"] not in beaten]
        text = f"{best['method']} has the highest conflict-mean, {_cell(best, 'conflict-mean')}"
        if beaten:
            text += f", its interval clear of {', '.join(beaten)}'s"
        if tied:
            text += f", overlapping {', '.join(tied)}'s (not resolved at this n)"
        parts.append(text)
    gaps = []
    for _, r in t.dropna(subset=["gap (A-V)"]).iterrows():
        lo, hi = r["gap (A-V)" + " lo"], r["gap (A-V)" + " hi"]
        bias = ("follows the voice" if lo > 0 else "follows the face" if hi < 0 else "shows no resolved bias")
        gaps.append(f"{r['method']} {bias} (gap {_cell(r, 'gap (A-V)')})")
    if gaps:
        parts.append("; ".join(gaps))
    small = min(int(r0["n consistent"]), int(r0["n video-aligned"]), int(r0["n audio-aligned"])) < 10
    caveat = " With fewer than 10 items in a subset these intervals are rough." if small else ""
    return warn + f"On this split ({n}): " + "; ".join(parts) + "." + caveat


def render_text(t: pd.DataFrame) -> str:
    """The table as fixed-width text (the terminal's last lines)."""
    titles = [c[2] for c in COLUMNS]
    rows = [["method", *titles]] + [[r["method"], *[_cell(r, c) for c in titles]] for _, r in t.iterrows()]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_html(t: pd.DataFrame) -> str:
    import html

    titles = [c[2] for c in COLUMNS]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *titles])
    body = "".join(
        "<tr>" + f"<td>{html.escape(str(r['method']))}</td>" + "".join(f"<td>{html.escape(_cell(r, c))}</td>" for c in titles) + "</tr>"
        for _, r in t.iterrows())
    return f'<table class="methods"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def print_tables(results_dir, file=None) -> bool:
    """Print the protocol warnings, then per benchmark the method table and its sentence, from a results
    folder (``metrics.parquet``, ``protocol.json``); False when there are no metrics."""
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
    for bench in sorted(m["benchmark"].unique()):
        t = method_table(m, bench, (protocol or {}).get("methods") or None,
                         ((protocol or {}).get("baselines") or {}).get(bench))
        from mosear.evaluate.aggregate import current_unit_files, unit_meta

        n_labels = next((len(unit_meta(f).get("labels") or []) for f in current_unit_files(root)
                         if unit_meta(f)["benchmark"] == bench), 1) or 1
        print(f"\n{bench}: accuracy per subset, 95 % intervals", file=file)
        print(render_text(t), file=file)
        print(headline_sentence(t, n_labels), file=file)
    return True
