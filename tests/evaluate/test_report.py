"""Aggregation to metrics.parquet (exact values on hand-written prediction tables), the report's
files, and the report opened in real headless Chromium with its plots rendered."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from mosear.evaluate.aggregate import compute_metrics
from mosear.evaluate.report import build_report
from mosear.evaluate.units import write_table

LABELS = ["neutral", "angry", "happy", "sad"]


def _unit(root, ck, setting, preds, *, ar=False, frac=None, drop=None, shares=None):
    """Write one prediction table (as a unit would) for 6 items in three subsets."""
    keys = [f"k{i}" for i in range(6)]
    subsets = ["audio_aligned"] * 2 + ["video_aligned"] * 2 + ["consistent"] * 2
    labels = ["angry", "sad", "happy", "angry", "sad", "neutral"]
    uid = f"{ck}-{setting}"
    rows = []
    for i, k in enumerate(keys):
        rows.append({"unit_id": uid, "checkpoint": ck, "benchmark": "camer", "setting": setting, "ar": ar,
                     "ar_fraction": frac, "drop": drop, "key": k, "subset": subsets[i], "label": labels[i],
                     "pred_label": preds[i], "parsed_label": preds[i], "labels": LABELS,
                     "reference": "He is furious." if i == 0 else None,
                     "pred_emotions": ["angry", "sad"] if i == 0 else None, "ref_emotions": ["angry"] if i == 0 else None,
                     "ov_precision": 0.5 if i == 0 else None, "ov_recall": 1.0 if i == 0 else None,
                     "share_audio": None if shares is None else shares[0], "share_visual": None if shares is None else shares[1],
                     "share_text": None if shares is None else 1 - shares[0] - shares[1]})
    meta = {"unit_id": uid, "checkpoint": ck, "benchmark": "camer", "labels": LABELS,
            "setting": {"name": setting, "ar": ar, "ar_fraction": frac, "drop": drop}}
    write_table(rows, root / "units" / f"{ck}__camer__{setting}__{uid}.parquet", {"mosear.unit": json.dumps(meta)})


@pytest.fixture()
def results(tmp_path):
    truth = ["angry", "sad", "happy", "angry", "sad", "neutral"]
    _unit(tmp_path, "mose", "ar_off", ["angry", "sad", "angry", "sad", "sad", None], shares=(0.5, 0.2))
    _unit(tmp_path, "mose", "ar_f0.5", ["angry", "sad", "happy", "sad", "sad", None], ar=True, frac=0.5, shares=(0.3, 0.4))
    _unit(tmp_path, "mose", "no_audio", ["happy", "sad", "angry", "sad", "sad", "neutral"], drop="audio", shares=(0.1, 0.5))
    _unit(tmp_path, "lora", "ar_off", truth, shares=(0.6, 0.1))
    return tmp_path


def _get(m, ck, setting, subset, metric):
    sel = m[(m.checkpoint == ck) & (m.setting == setting) & (m.subset == subset) & (m.metric == metric)]
    assert len(sel) == 1, (ck, setting, subset, metric)
    return float(sel["value"].iloc[0])


def test_metrics_exact(results):
    m = compute_metrics(results)
    assert (results / "metrics.parquet").is_file()
    # mose ar_off: audio-aligned 2/2, video-aligned 0/2 -> gap +1; consistent: 1 right, 1 unparsed
    assert _get(m, "mose", "ar_off", "audio_aligned", "accuracy") == 1.0
    assert _get(m, "mose", "ar_off", "video_aligned", "accuracy") == 0.0
    assert _get(m, "mose", "ar_off", "all", "conflict_gap") == 1.0
    assert _get(m, "mose", "ar_off", "all", "unparsed") == 1
    assert _get(m, "mose", "ar_off", "all", "accuracy") == pytest.approx(3 / 6)
    # AR at 0.5 fixes one video-aligned item: gap 1 - 0.5
    assert _get(m, "mose", "ar_f0.5", "all", "conflict_gap") == pytest.approx(0.5)
    # no_audio vs ar_off: k0 angry->happy, k5 unparsed->neutral: 2 of 6 flip
    assert _get(m, "mose", "no_audio", "all", "flip_rate") == pytest.approx(2 / 6)
    assert _get(m, "lora", "ar_off", "all", "accuracy") == 1.0 and _get(m, "lora", "ar_off", "all", "weighted_f1") == 1.0
    assert _get(m, "mose", "ar_off", "all", "ov_mean") == pytest.approx(0.75)
    assert _get(m, "mose", "ar_off", "audio_aligned", "ov_precision") == pytest.approx(0.5)
    assert _get(m, "mose", "ar_f0.5", "all", "share_audio") == pytest.approx(0.3)
    # every score carries its 95 % interval; counts carry none
    scores = m[m["metric"].isin(["accuracy", "weighted_f1", "uar", "conflict_gap", "conflict_mean", "flip_rate"])]
    assert scores["ci_low"].notna().all() and (scores["ci_low"] <= scores["value"] + 1e-12).all()
    assert (scores["value"] <= scores["ci_high"] + 1e-12).all()
    assert m[m["metric"].isin(["n", "items", "unparsed"])]["ci_low"].isna().all()
    assert _get(m, "mose", "ar_off", "all", "conflict_mean") == pytest.approx(0.5)


def test_stale_units_are_ignored_when_a_manifest_exists(results):
    keep = sorted(p.name for p in (results / "units").glob("mose__*"))
    (results / "units.json").write_text(json.dumps({"units": keep}))
    m = compute_metrics(results)
    assert set(m["checkpoint"]) == {"mose"}


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian package `chromium`; see .ci/install.sh)")
    return exe


def open_in_chromium(html_path, tmp_path) -> str:
    """The DOM of ``html_path`` after load, as headless Chromium renders it (fresh profile, no network)."""
    exe = _chromium()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", html_path.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def check_rendered(dom: str, expected_plots: int) -> None:
    imgs = re.findall(r"<img\b[^>]*>", dom)
    assert len(imgs) == expected_plots
    for tag in imgs:
        assert 'data-loaded="true"' in tag, tag[:200]
        width = int(re.search(r'data-natural-width="(\d+)"', tag).group(1))
        assert width > 100
    assert 'data-plots-failed="0"' in dom


def test_report_renders_in_chromium(results, tmp_path):
    html = build_report(results)
    pngs = sorted(p.name for p in (results / "plots").glob("*.png"))
    assert pngs == ["camer_accuracy.png", "camer_attention_share.png", "camer_confusion.png",
                    "camer_flip_rate.png", "camer_gap_vs_ar.png"]
    text = html.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    # the page opens with its title, then what was evaluated, then the accuracy table and its sentence
    body = text.split("<body>", 1)[1].lstrip()
    assert body.startswith("<h1>mosear evaluation report</h1>"), body[:200]
    assert body.index("What was evaluated") < body.index('<table class="methods">') < body.index('class="headline">On this split')
    first = body.split("</table>", 1)[0]
    assert '<table class="methods">' in first and "video-aligned" in first and "[" in first
    assert body.index("<details>") > body.index("<img")  # every number collapsed, below the plots
    check_rendered(open_in_chromium(html, tmp_path), expected_plots=len(pngs))
    # the table holds every number of metrics.parquet
    m = pd.read_parquet(results / "metrics.parquet")
    assert text.count("<tr>") >= len(m)


def test_broken_plot_is_reported_by_the_page(results, tmp_path):
    html = build_report(results)
    page = html.read_text()
    broken = page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    p = tmp_path / "broken.html"
    p.write_text(broken)
    dom = open_in_chromium(p, tmp_path)
    assert 'data-plots-failed="1"' in dom and "1 plot(s) failed to load" in dom


def test_real_eval_report_renders(tmp_path, checkpoints, camer_bench, eval_shards):
    """The report of a real (tiny-model) evaluation, rebuilt by `mosear report`, renders in Chromium."""
    from mosear.cli import main
    from mosear.config import load_config
    from mosear.evaluate.config import EvalConfig
    from mosear.evaluate.fanout import run_eval

    cfg = load_config(EvalConfig, overrides={
        "checkpoints": [str(checkpoints["mose"])], "output": str(tmp_path / "r"), "progress": False,
        "benchmarks": [{"name": "camer", "format": "mined", "path": str(camer_bench), "shards": str(eval_shards)}],
        "settings": [{"name": "ar_off"}, {"name": "no_video", "drop": "video"}], "max_new_tokens": 4, "report": False,
    })
    assert run_eval(cfg).ok
    assert main(["report", str(tmp_path / "r")]) == 0
    html = tmp_path / "r" / "report.html"
    n = len(list((tmp_path / "r" / "plots").glob("*.png")))
    left_out = html.read_text().count('class="plot-left-out"')  # plots with no information, each said so
    assert n >= 2 and n + left_out == 5
    check_rendered(open_in_chromium(html, tmp_path), expected_plots=n)


def test_plots_without_information_are_left_out_with_a_line(tmp_path):
    """The bug: a gap-vs-AR plot of a single point on a +-0.04 axis, and identical bars, were drawn as if they
    said something. One AR setting per checkpoint and equal accuracies: both left out, each with a line."""
    same = ["angry", "sad", "happy", "angry", "sad", "neutral"]
    _unit(tmp_path, "mose", "ar_off", same)
    _unit(tmp_path, "lora", "ar_off", same)
    page = build_report(tmp_path).read_text()
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "camer_gap_vs_ar.png" not in pngs and "camer_accuracy.png" not in pngs and "camer_confusion.png" in pngs
    assert "gap vs ar: left out: one AR setting per checkpoint" in page
    assert "accuracy: left out: every value is 1.000" in page
    # ties are called ties: two identical rows are not "LoRA has the highest"
    assert "has the highest consistent accuracy" not in page and "tie for the highest consistent accuracy" in page


def test_confusion_counts_are_readable_on_dark_cells(results):
    """The bug: dark numbers on navy cells. Counts on the dark half of the colour map are drawn in white."""
    import matplotlib

    from mosear.evaluate import report

    fig = report._fig_confusions(results, "camer", "ar_off")
    colours = {t.get_text(): matplotlib.colors.to_hex(t.get_color()) for ax in fig.axes for t in ax.texts}
    assert colours and set(colours.values()) <= {"#ffffff", "#000000"}
    assert "#ffffff" in colours.values()  # the largest count sits on the darkest cell


def test_calibration_is_said_in_words():
    """The bug: "MoSE+AR" was AR switched off (fraction 0 chosen) and the page never said so."""
    from mosear.evaluate.headline import calibration_words

    rows = [{"threshold": 1.0, "fraction": 0.0, "share": "mass", "direction": "audio", "consistent": 0.8,
             "conflict_mean": 0.5},
            {"threshold": 0.5, "fraction": 0.5, "share": "token", "direction": "audio", "consistent": 0.6,
             "conflict_mean": 0.7}]
    off = calibration_words({"threshold": 1.0, "fraction": 0.0, "table": rows, "items": {"consistent": 4},
                             "options": [{"share": "mass", "direction": "audio"}, {"share": "token", "direction": "audio"}]})
    assert off.startswith("AR off: no setting beat it on the validation split") and "variants mass/audio, token/audio" in off
    on = calibration_words({"threshold": 0.5, "fraction": 0.5, "share": "token", "direction": "audio", "table": rows})
    assert on.startswith("AR on: threshold 0.5, fraction 0.5, share token, direction audio")
    assert "conflict-mean 0.70 against 0.50 without AR" in on
