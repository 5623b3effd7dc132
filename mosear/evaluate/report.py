"""The evaluation report: PNG plots plus one self-contained HTML file (plots embedded as data URIs).

``build_report(results_dir)`` recomputes ``metrics.parquet`` from the unit prediction files, draws
``plots/*.png`` and writes ``report.html``; it needs nothing but the Parquet files, so ``mosear
report`` can rebuild a report anywhere the results folder is copied to.

Layout: the title; the protocol warnings (checkpoints evaluated on keys they trained on with
``allow_overlap``, checkpoints without recorded training keys; ``protocol.json``); **what was evaluated**
(checkpoints, benchmark, split, item counts per subset and origin, the split's actors, how the intervals
resample, the settings, settings skipped with their reasons: :func:`~mosear.evaluate.headline.evaluated_lines`);
for every calibrated setting **what calibration chose, in words** ("AR off: no setting beat it on
validation ..."); then per benchmark the **accuracy table** (items with a truth) and, when it has splices,
the **preference table** (which cue the answer named), one sentence computed from them
(:mod:`.headline`: verdicts against the training-majority row, ties called ties), then the plots, then
every number of ``metrics.parquet`` in a collapsed table.

Plots (error bars: the 95 % intervals): accuracy per subset per checkpoint (one per benchmark, settings
without ablation), confusion matrices (checkpoint × benchmark, reference setting; counts in white on dark
cells, black on light ones), conflict gap against AR's fraction (a diagnostic on the evaluated split:
choices are made on validation), attention share per modality (checkpoint × setting), flip rate under
modality removal. A plot that carries no information (a single point, every value the same, nothing
measured) is left out, and a line in its place says why (:func:`_no_information`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mosear.atomic import atomic_write  # noqa: E402
from mosear.evaluate import metrics as M  # noqa: E402
from mosear.evaluate.aggregate import compute_metrics, current_unit_files, load_unit, unit_meta  # noqa: E402
from mosear.evaluate.headline import (calibration_lines, evaluated_lines, headline_sentence, method_table,  # noqa: E402
                                      preference_table, render_html, render_pref_html)
from mosear.evaluate.protocol import protocol_notes, read_protocol  # noqa: E402

__all__ = ["build_report"]

_SUBSET_ORDER = ["all", "consistent", "video_aligned", "audio_aligned", "ambiguous"]
_MOD_COLORS = {"audio": "#d1495b", "visual": "#00798c", "text": "#edae49"}


def _value(m: pd.DataFrame, **where) -> pd.DataFrame:
    sel = m
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel


def _reference_setting(m: pd.DataFrame) -> str | None:
    names = m["setting"].unique().tolist()
    if "ar_off" in names:
        return "ar_off"
    plain = m[(~m["ar"].astype(bool)) & m["drop"].isna()]["setting"].unique().tolist()
    return plain[0] if plain else (names[0] if names else None)


def _yerr(sel: pd.DataFrame, vals: list[float], keys: list[dict]) -> np.ndarray:
    """``[2, n]`` distances from each value to its interval's ends (0 where there is none)."""
    lo, hi = [], []
    for v, where in zip(vals, keys):
        r = _value(sel, **where) if where else sel.iloc[0:0]
        a = r["ci_low"].mean() if len(r) and "ci_low" in r else np.nan
        b = r["ci_high"].mean() if len(r) and "ci_high" in r else np.nan
        lo.append(0.0 if np.isnan(a) or np.isnan(v) else max(0.0, v - a))
        hi.append(0.0 if np.isnan(b) or np.isnan(v) else max(0.0, b - v))
    return np.array([lo, hi])


def _no_information(values) -> str | None:
    """Why a plot of ``values`` would carry no information (fewer than two values, or all equal), or None."""
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) < 2:
        return "left out: a single value, nothing to compare"
    if np.allclose(v, v[0]):
        return f"left out: every value is {v[0]:.3f}"
    return None


def _fig_accuracy(m: pd.DataFrame, bench: str):
    acc = _value(m, benchmark=bench, metric="accuracy")
    acc = acc[acc["drop"].isna()]
    if acc.empty:
        return "left out: no accuracy (no item with a truth was scored)"
    if (why := _no_information(acc["value"])) is not None:
        return why
    subsets = [s for s in _SUBSET_ORDER if s in set(acc["subset"])] + sorted(set(acc["subset"]) - set(_SUBSET_ORDER))
    series = sorted({(c, s) for c, s in zip(acc["checkpoint"], acc["setting"])})
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(subsets) + 0.25 * len(series)), 3.6))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(subsets))
    for i, (ck, st) in enumerate(series):
        vals = [_value(acc, checkpoint=ck, setting=st, subset=s)["value"].mean() if s in set(acc["subset"]) else np.nan for s in subsets]
        err = _yerr(acc, vals, [{"checkpoint": ck, "setting": st, "subset": s} for s in subsets])
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, yerr=err, capsize=2, label=f"{ck} · {st}",
               error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, subsets)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{bench}: accuracy per subset (95 % intervals)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _fig_confusions(results_dir: Path, bench: str, setting: str):
    tables = []
    for f in current_unit_files(results_dir):
        meta = unit_meta(f)
        if meta["benchmark"] == bench and meta["setting"]["name"] == setting:
            df = load_unit(f)
            if df["label"].notna().any():
                tables.append((meta["checkpoint"], df[df["label"].notna()], list(meta["labels"])))
    if not tables:
        return "left out: no labelled item"
    fig, axes = plt.subplots(1, len(tables), figsize=(4.4 * len(tables), 4.2), squeeze=False)
    for ax, (ck, df, labels) in zip(axes[0], tables):
        cm, cols = M.confusion(df, labels)
        ax.imshow(cm, cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(cols)), [c if c != M.UNPARSED else "none" for c in cols], rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        dark = cm.max() / 2 if cm.size and cm.max() else 1
        for (i, j), v in np.ndenumerate(cm):
            if v:  # readable on any cell colour: white on the dark half of the colour map, black on the light
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > dark else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"{ck} ({setting})", fontsize=9)
    fig.suptitle(f"{bench}: confusion matrices")
    fig.tight_layout()
    return fig


def _fig_gap(m: pd.DataFrame, bench: str):
    gap = _value(m, benchmark=bench, metric="conflict_gap")
    gap = gap[gap["drop"].isna() & ~gap["setting"].str.contains("calibrated")]  # a sweep, not the chosen one
    if gap.empty:
        return "left out: no conflict gap (a conflict subset is empty)"
    gap = gap.assign(x=[0.0 if not a else (f if f is not None and not (isinstance(f, float) and math.isnan(f)) else np.nan)
                        for a, f in zip(gap["ar"], gap["ar_fraction"])])
    gap = gap.dropna(subset=["x"])
    if gap.groupby("checkpoint")["x"].nunique().max() < 2:
        return "left out: one AR setting per checkpoint, a single point has no trend"
    if (why := _no_information(gap["value"])) is not None:
        return why
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for ck, g in gap.groupby("checkpoint"):
        g = g.dropna(subset=["x"]).sort_values("x")
        err = np.array([(g["value"] - g["ci_low"]).clip(lower=0).fillna(0), (g["ci_high"] - g["value"]).clip(lower=0).fillna(0)])
        ax.errorbar(g["x"], g["value"], yerr=err, marker="o", capsize=2, label=ck)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("AR fraction (0 = AR off)")
    ax.set_ylabel("audio-aligned − video-aligned accuracy")
    ax.set_title(f"{bench}: gap vs AR fraction\n(diagnostic on the evaluated split; AR is chosen on validation)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig_shares(m: pd.DataFrame, bench: str):
    sh = _value(m, benchmark=bench, subset="all")
    sh = sh[sh["metric"].str.startswith("share_")]
    if sh.empty:
        return "left out: no setting monitored attention"
    series = sorted({(c, s) for c, s in zip(sh["checkpoint"], sh["setting"])})
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(series) + 2), 3.6))
    bottom = np.zeros(len(series))
    for mod in ("audio", "visual", "text"):
        vals = np.array([_value(sh, checkpoint=c, setting=s, metric=f"share_{mod}")["value"].mean() for c, s in series])
        vals = np.nan_to_num(vals)
        ax.bar(range(len(series)), vals, bottom=bottom, color=_MOD_COLORS[mod], label=mod)
        bottom += vals
    ax.set_xticks(range(len(series)), [f"{c}\n{s}" for c, s in series], fontsize=7, rotation=30)
    ax.set_ylabel("share of attention mass")
    ax.set_ylim(0, 1)
    ax.set_title(f"{bench}: attention share per modality")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def _fig_flips(m: pd.DataFrame, bench: str):
    fl = _value(m, benchmark=bench, metric="flip_rate")
    if fl.empty:
        return "left out: no setting removed a modality"
    if len(fl) > 1 and (why := _no_information(fl["value"])) is not None:
        return why
    series = sorted({(c, s) for c, s in zip(fl["checkpoint"], fl["setting"])})
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(series) + 2), 3.2))
    vals = [_value(fl, checkpoint=c, setting=s)["value"].mean() for c, s in series]
    err = _yerr(fl, vals, [{"checkpoint": c, "setting": s} for c, s in series])
    ax.bar(range(len(series)), vals, color="#30638e", yerr=err, capsize=2)
    ax.set_xticks(range(len(series)), [f"{c}\n{s}" for c, s in series], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("flip rate vs. nothing removed")
    ax.set_title(f"{bench}: prediction flips when a modality is removed")
    fig.tight_layout()
    return fig


def _n_labels(results_dir: Path, bench: str) -> int:
    """Size of the benchmark's label space (chance = 1 / it), from its units' metadata."""
    for f in current_unit_files(results_dir):
        meta = unit_meta(f)
        if meta["benchmark"] == bench:
            return len(meta.get("labels") or []) or 1
    return 1


def _save(fig, path: Path) -> str:
    """Write ``fig`` as PNG to ``path``; return it base64-encoded for embedding."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = buf.getvalue()
    atomic_write(path, data)
    return base64.b64encode(data).decode("ascii")


_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var bad = 0;
  document.querySelectorAll('img.plot').forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0;
    img.setAttribute('data-natural-width', String(img.naturalWidth));
    img.setAttribute('data-loaded', ok ? 'true' : 'false');
    if (!ok) { bad += 1; }
  });
  document.body.setAttribute('data-plots-failed', String(bad));
  if (bad) { document.getElementById('plot-warning').textContent = bad + ' plot(s) failed to load'; }
});
"""


def _missing_html(root: Path) -> str:
    """A warning naming the units that are missing (a run with ``allow_partial``), or nothing."""
    import json

    try:
        missing = json.loads((root / "units.json").read_text()).get("missing") or []
    except (OSError, ValueError):
        missing = []
    if not missing:
        return ""
    names = ", ".join(html.escape(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
    return (f'<p id="missing-units" style="color:#b00;font-weight:bold">PARTIAL: {len(missing)} unit(s) failed '
            f"and are missing from every table below (allow_partial): {names}. See run.json for the errors.</p>")


def build_report(results_dir: str | Path) -> Path:
    """Rebuild ``metrics.parquet``, ``plots/*.png`` and ``report.html`` in ``results_dir``; returns the HTML path."""
    root = Path(results_dir)
    if not (root / "units").is_dir():
        raise FileNotFoundError(f"{root}: no units/ folder (run `mosear eval` first)")
    m = compute_metrics(root)
    plots = root / "plots"
    plots.mkdir(exist_ok=True)
    protocol = read_protocol(root)
    methods = (protocol or {}).get("methods") or None
    notes = protocol_notes(protocol)
    sections: list[str] = []
    heads: list[str] = []
    for bench in sorted(m["benchmark"].unique()):
        bm = _value(m, benchmark=bench)
        baseline = ((protocol or {}).get("baselines") or {}).get(bench)
        t = method_table(m, bench, methods, baseline)
        pref = preference_table(m, bench, methods, baseline)
        sentence = headline_sentence(t, _n_labels(root, bench), pref)
        block = (f"<h2>{html.escape(bench)}: accuracy on items with a truth (natural, human-rated; 95 % intervals)</h2>\n"
                 f"{render_html(t)}\n")
        if len(pref):
            block += (f"<h3>{html.escape(bench)}: preference on splices (no true emotion: which cue the answer named; "
                      f"index = voice rate - face rate)</h3>\n{render_pref_html(pref)}\n")
        heads.append(block + f"<p class=\"headline\">{html.escape(sentence)}</p>")
        ref = _reference_setting(bm)
        figs = [
            ("accuracy", _fig_accuracy(m, bench)),
            ("confusion", _fig_confusions(root, bench, ref) if ref else "left out: no reference setting"),
            ("gap_vs_ar", _fig_gap(m, bench)),
            ("attention_share", _fig_shares(m, bench)),
            ("flip_rate", _fig_flips(m, bench)),
        ]
        imgs = []
        for kind, fig in figs:
            name = f"{bench}_{kind}.png"
            if fig is None or isinstance(fig, str):
                (plots / name).unlink(missing_ok=True)  # a stale plot of an earlier build must not stay beside
                imgs.append(f'<p class="plot-left-out">{html.escape(kind.replace("_", " "))}: '
                            f'{html.escape(fig or "left out: nothing to plot")}</p>')
                continue
            b64 = _save(fig, plots / name)
            imgs.append(f'<figure><img class="plot" alt="{html.escape(name)}" src="data:image/png;base64,{b64}">'
                        f"<figcaption>{html.escape(name)}</figcaption></figure>")
        sections.append(f"<h2>{html.escape(bench)}: plots</h2>\n" + "\n".join(imgs))
    evaluated = "".join(f"<li>{html.escape(x)}</li>" for x in evaluated_lines(root))
    calibrated = "".join(f"<li>{html.escape(x)}</li>" for x in calibration_lines(root))
    table = m.sort_values(["benchmark", "checkpoint", "setting", "subset", "metric"]).drop(columns=["unit_id"])
    table_html = table.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="", classes="numbers", border=0)
    n_units = m["unit_id"].nunique() if not m.empty else 0
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from mosear.evaluate.endpoint import report_notes

    unavailable = "".join(f'<p class="unavailable">{html.escape(n)}</p>' for n in report_notes(root))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mosear evaluation report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
img.plot {{ max-width: 100%; border: 1px solid #ddd; }}
table.numbers {{ border-collapse: collapse; font-size: 12px; }}
table.numbers td, table.numbers th {{ padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }}
#plot-warning {{ color: #b00; font-weight: bold; }}
.protocol-warning {{ color: #b00; font-weight: bold; }}
table.methods {{ border-collapse: collapse; font-size: 14px; }}
table.methods td, table.methods th {{ padding: 3px 10px; border-bottom: 1px solid #ccc; text-align: left; }}
</style></head>
<body>
<h1>mosear evaluation report</h1>
{''.join(f'<p class="protocol-warning">{html.escape(n)}</p>' for n in notes)}
<p id="plot-warning"></p>
{_missing_html(root)}
<h2>What was evaluated</h2>
<ul class="evaluated">{evaluated or "<li>(no record of the plan: protocol.json has no 'evaluated')</li>"}</ul>
{f'<h2>What calibration chose</h2><ul class="calibration">{calibrated}</ul>' if calibrated else ""}
{''.join(heads)}
<p>{n_units} evaluation unit(s) (checkpoint × benchmark × setting), built {stamp} from
<code>units/*.parquet</code>. Intervals: 95 % bootstrap (2000 resamples, expanded percentile level for the
number of units resampled; people, source recordings or items, as said above). Metric definitions:
<code>docs/evaluation.md</code>.</p>
{unavailable}
{''.join(sections)}
<details><summary>Every number ({len(m)} rows of metrics.parquet)</summary>
{table_html}
</details>
<script>{_CHECK_SCRIPT}</script>
</body></html>
"""
    out = root / "report.html"
    atomic_write(out, page)
    return out
