"""``run_eval`` with the real tiny model on real shards: every item accounted for, caching, failure
isolation, a killed worker, the CLI."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from mosear.config import load_config
from mosear.evaluate.config import EvalConfig
from mosear.evaluate.fanout import run_eval
from mosear.identity import read_marker
from mosear.orchestrate.errors import StageFailedError


def make_cfg(output, checkpoints, bench, **kw) -> EvalConfig:
    over = {"checkpoints": [str(c) for c in checkpoints],
            "benchmarks": [{"name": "camer", "format": "mined", "path": str(bench[0]), "shards": str(bench[1])}],
            "output": str(output), "max_new_tokens": 6, "progress": False, "model": {"preset": "tiny"}}
    over.update(kw)
    return load_config(EvalConfig, overrides=over)


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, checkpoints, camer_bench, eval_shards):
    out = tmp_path_factory.mktemp("eval") / "reports"
    cfg = make_cfg(out, [checkpoints["mose"], checkpoints["lora"]], (camer_bench, eval_shards), ar_sweep=[0.25])
    return cfg, run_eval(cfg)


def test_every_unit_and_item_accounted_for(eval_run, camer_bench, missing_key):
    cfg, res = eval_run
    assert res.ok, res.failed
    assert res.units == 2 * 5 and len(res.computed) == 10 and not res.cached
    n_items = sum(len(json.loads((camer_bench / f"{s}.json").read_text())) for s in ("video_aligned", "audio_aligned", "consistent"))
    files = sorted((res.output / "units").glob("*.parquet"))
    assert len(files) == 10 and not list((res.output / "units").glob("*.tmp"))
    for f in files:
        df = pd.read_parquet(f)
        assert len(df) == n_items and df["key"].is_unique
        missing = df[df["key"] == missing_key]
        assert missing["error"].str.contains("not in shards").all()
        ok = df[df["error"].isna()]
        assert ok["pred_label"].notna().all()  # score mode always yields a label
        assert ok["scores"].map(len).eq(len(ok["labels"].iloc[0])).all()
        assert ok["text"].notna().all()  # references exist, so reasoning was generated and judged
        assert ok["ov_precision"].between(0, 1).all() and ok["share_audio"].between(0, 1).all()
        # no-video units really got black frames: shares still recorded, and the table says what was dropped
        if "__no_video__" in f.name:
            assert (df["drop"] == "video").all()


def test_metrics_and_report_written(eval_run):
    _, res = eval_run
    m = pd.read_parquet(res.output / "metrics.parquet")
    have = set(m["metric"])
    assert {"accuracy", "weighted_f1", "uar", "war", "conflict_gap", "flip_rate", "ov_precision",
            "ov_recall", "ov_mean", "share_audio", "share_visual", "errors", "unparsed"} <= have
    allrows = m[(m["subset"] == "all") & (m["metric"] == "errors")]
    assert (allrows["value"] == 1).all()  # the missing sample, in every unit
    assert set(m[m["metric"] == "accuracy"]["subset"]) == {"all", "video_aligned", "audio_aligned", "consistent"}
    assert set(m[m["metric"] == "flip_rate"]["setting"]) == {"no_audio", "no_video"}
    assert res.report is not None and res.report.is_file()
    run = json.loads((res.output / "run.json").read_text())
    assert run["units"] == 10 and not run["failed"]


def test_rerun_recomputes_nothing(eval_run):
    cfg, res = eval_run
    before = {f.name: f.stat().st_mtime_ns for f in (res.output / "units").glob("*.parquet")}
    again = run_eval(cfg.model_copy(update={"num_workers": 1, "report": False}))  # scheduling fields: same ids
    assert again.computed == [] and len(again.cached) == 10 and again.ok
    assert {f.name: f.stat().st_mtime_ns for f in (res.output / "units").glob("*.parquet")} == before


def test_damaged_unit_file_is_redone(eval_run):
    cfg, res = eval_run
    victim = sorted((res.output / "units").glob("*__no_audio__*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # a broken file (truncated copy)
    again = run_eval(cfg.model_copy(update={"report": False}))
    assert again.computed == [victim.name] and len(again.cached) == 9
    assert victim.with_name(victim.name + ".broken").is_file()
    assert pd.read_parquet(victim)["key"].is_unique


def test_failed_unit_fails_the_stage_and_is_retried_alone(tmp_path, checkpoints, camer_bench, eval_shards):
    """A failed unit fails the stage (count, first reason; no metrics, no marker) while the other units are
    kept; allow_partial builds metrics and report without it and says so; the fixed rerun computes it alone."""
    broken = tmp_path / "broken" / "adapter"
    shutil.copytree(checkpoints["lora"], broken)
    good_cfg = (broken / "model_config.json").read_text()
    (broken / "model_config.json").write_text("{not json")
    cfg = make_cfg(tmp_path / "out", [checkpoints["mose"], broken], (camer_bench, eval_shards),
                   settings=[{"name": "ar_off"}])
    out = tmp_path / "out"
    with pytest.raises(StageFailedError, match=r"1 of 2 failed \(first: broken__") as info:
        run_eval(cfg)
    [(name, err)] = info.value.reasons.items()
    assert name.startswith("broken__") and "JSON" in err
    run = json.loads((out / "run.json").read_text())
    assert len(run["computed"]) == 1 and "mose__" in run["computed"][0] and list(run["failed"]) == [name]
    assert read_marker(out) is None and not (out / "metrics.parquet").exists()  # nothing passes for complete

    partial = run_eval(cfg.model_copy(update={"allow_partial": True}))
    assert partial.failed.keys() == {name} and partial.cached == run["computed"]
    marker = read_marker(out)
    assert marker["status"] == "partial" and marker["missing"] == [name]
    assert "PARTIAL: 1 unit(s) failed" in (out / "report.html").read_text()
    assert set(pd.read_parquet(out / "metrics.parquet")["checkpoint"]) == {"mose"}

    (broken / "model_config.json").write_text(good_cfg)  # the user fixes the checkpoint
    res2 = run_eval(cfg)
    assert res2.ok and res2.cached == run["computed"] and read_marker(out)["status"] == "complete"
    assert len(res2.computed) == 1 and res2.computed[0].startswith("broken__")
    assert len(res2.computed) == 1 and res2.computed[0].startswith("broken__")


@pytest.mark.slow
def test_killed_worker_is_retried_by_ray(tmp_path, checkpoints, camer_bench, eval_shards):
    """SIGKILL the Ray worker process running a unit (from outside, as the OOM killer would): Ray retries
    the unit and the result equals an undisturbed run's."""
    from faults import kill_once_when

    cfg = make_cfg(tmp_path / "out", [checkpoints["mose"]], (camer_bench, eval_shards),
                   settings=[{"name": "ar_off"}, {"name": "no_audio", "drop": "audio"}], report=False)
    with kill_once_when("ray::_unit_task") as killed:
        res = run_eval(cfg)
    assert killed, "no unit worker was found to kill"
    assert res.ok and len(res.computed) == 2
    ref = run_eval(cfg.model_copy(update={"output": str(tmp_path / "ref")}))
    for name in res.computed:
        a = pd.read_parquet(tmp_path / "out" / "units" / name)
        b = pd.read_parquet(tmp_path / "ref" / "units" / name)
        pd.testing.assert_frame_equal(a[["key", "pred_label", "text"]], b[["key", "pred_label", "text"]])


def test_generate_mode_counts_unparsed(tmp_path, checkpoints, camer_bench, eval_shards):
    cfg = make_cfg(tmp_path / "out", [checkpoints["mose"]], (camer_bench, eval_shards),
                   settings=[{"name": "ar_off", "monitor": False}], prediction="generate", max_new_tokens=4)
    res = run_eval(cfg)
    assert res.ok
    [f] = (res.output / "units").glob("*.parquet")
    df = pd.read_parquet(f)
    ok = df[df["error"].isna()]
    unparsed = int(ok["pred_label"].isna().sum())
    m = pd.read_parquet(res.output / "metrics.parquet")
    row = lambda k: float(m[(m["subset"] == "all") & (m["metric"] == k)]["value"].iloc[0])  # noqa: E731
    assert row("unparsed") == unparsed and row("n") == len(ok)  # unparsed stay in the denominator
    correct = int((ok["pred_label"] == ok["label"]).sum())
    assert row("accuracy") == pytest.approx(correct / len(ok))
    assert ok["share_audio"].isna().all()  # monitor off: no shares


def test_cli_eval_and_report(eval_run, tmp_path, capsys):
    from mosear.cli import main

    cfg, res = eval_run
    (tmp_path / "eval.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    assert main(["eval", "--config", str(tmp_path / "eval.yaml"), "report=false"]) == 0
    assert "0 computed, 10 cached" in capsys.readouterr().out
    (res.output / "report.html").unlink()
    assert main(["report", str(res.output)]) == 0
    assert (res.output / "report.html").is_file()


def test_cli_bad_benchmark_names_row(tmp_path, capsys, checkpoints, eval_shards):
    from mosear.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "video_aligned.json").write_text(json.dumps({"k1": {"reason": "x", "label": "happy"}}))
    (bad / "audio_aligned.json").write_text(json.dumps({"k2": {"comment": "no fields"}}))
    (bad / "consistent.json").write_text("{}")
    rc = main(["eval", f"checkpoints=[{checkpoints['mose']}]", f"output={tmp_path / 'o'}",
               f"benchmarks=[{{name: b, format: mined, path: {bad}, shards: {eval_shards}, split: all}}]"])
    assert rc == 2
    assert "row 'k2': missing fields" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluates_a_real_mosear_mine_output(tmp_path, eval_shards, checkpoints):
    """`mosear mine` output as a benchmark reading the shard folder it names (nothing is looked up beside
    the mined folder: without `shards` it is a clear error), every key has media."""
    from mosear.mine.config import MineConfig
    from mosear.mine.run import run_mine

    mined = tmp_path / "mined"
    run_mine(load_config(MineConfig, overrides={"shards": str(eval_shards), "output": str(mined), "progress": False}))
    bench = {"name": "mined", "format": "mined", "path": str(mined), "split": "all"}
    cfg = load_config(EvalConfig, overrides={
        "checkpoints": [str(checkpoints["mose"])], "output": str(tmp_path / "r"), "progress": False,
        "benchmarks": [bench],
        "settings": [{"name": "ar_off"}, {"name": "ar_on", "ar": True, "ar_fraction": 0.5, "ar_threshold": 0.0}],
        "max_new_tokens": 4,
    })
    with pytest.raises(FileNotFoundError, match=r"set benchmarks\[\]\.shards"):
        run_eval(cfg)
    cfg = cfg.model_copy(update={"benchmarks": [cfg.benchmarks[0].model_copy(update={"shards": str(eval_shards)})]})
    res = run_eval(cfg)
    assert res.ok and len(res.computed) == 2
    # every exported item is evaluated: the three CA-MER subsets, the items with a truth no cue decided
    # (ambiguous.json) and the splices (spliced.json, scored for preference)
    exported = sum(len(json.loads((mined / f"{s}.json").read_text()))
                   for s in ("video_aligned", "audio_aligned", "consistent", "ambiguous", "spliced"))
    for f in (res.output / "units").glob("*.parquet"):
        df = pd.read_parquet(f)
        assert len(df) == exported and df["error"].isna().all()
    m = pd.read_parquet(res.output / "metrics.parquet")
    share = m[(m["metric"] == "share_audio") & (m["subset"] == "all")].set_index("setting")["value"]
    assert share["ar_on"] < share["ar_off"]  # AR at threshold 0 moves audio attention to the video


def test_unreachable_judge_fails_the_unit_with_a_clear_error(tmp_path, checkpoints, camer_bench, eval_shards):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_cfg(tmp_path / "out", [checkpoints["mose"]], (camer_bench, eval_shards), settings=[{"name": "ar_off"}],
                   judge={"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "retries": 1, "backoff_s": 0.01})
    with pytest.raises(StageFailedError) as info:
        run_eval(cfg)
    [(name, err)] = info.value.reasons.items()
    assert "JudgeUnavailable" in err and f"127.0.0.1:{port}" in err and "after 2 attempts" in err
    assert not list((tmp_path / "out" / "units").glob("*.parquet"))  # nothing half-written


@pytest.mark.slow
def test_closed_set_benchmarks_end_to_end(tmp_path, checkpoints, shard_keys, eval_shards):
    """MER2023 (npz), DFEW (fold CSV) and EMER (reasoning CSV) files over the sample shards' clips."""
    import numpy as np

    from mosear.evaluate.benchmark_files import DFEW_LABELS
    from mosear.labels import MER2023_LABELS

    rav = [(k.split("__", 1)[1], lab) for k, lab in shard_keys if k.startswith("ravdess__") and lab in MER2023_LABELS]
    crema = [(k.split("__", 1)[1], lab) for k, lab in shard_keys if k.startswith("crema_d__") and lab in DFEW_LABELS]
    npz = tmp_path / "label.npz"
    np.savez(npz, test1_corpus={name: {"emo": lab, "val": 0.0} for name, lab in rav})
    csv = tmp_path / "set_1.csv"
    csv.write_text("video_name,label\n" + "".join(f"{n},{DFEW_LABELS.index(lab) + 1}\n" for n, lab in crema))
    emer = tmp_path / "emer.csv"
    emer.write_text("names,eng_reasons\n" + "".join(f'{n},"He frowns and sounds {lab}."\n' for n, lab in rav))
    stale = tmp_path / "r" / "units" / ".x__mer__ar_off__0.parquet.tmp-123-abcd"  # a killed run's leftover
    stale.parent.mkdir(parents=True)
    stale.write_text("half a file")
    cfg = load_config(EvalConfig, overrides={
        "checkpoints": [str(checkpoints["lora"])], "output": str(tmp_path / "r"), "progress": False, "report": False,
        "benchmarks": [{"name": "mer", "format": "mer2023", "path": str(npz), "shards": str(eval_shards), "key_prefix": "ravdess"},
                       {"name": "dfew", "format": "dfew", "path": str(csv), "shards": str(eval_shards), "key_prefix": "crema_d"},
                       {"name": "emer", "format": "emer", "path": str(emer), "shards": str(eval_shards), "key_prefix": "ravdess"}],
        "settings": [{"name": "ar_off"}],
    })
    res = run_eval(cfg)
    assert res.ok and len(res.computed) == 3 and not stale.exists()
    m = pd.read_parquet(res.output / "metrics.parquet")
    assert set(m["subset"]) == {"all"}
    for bench, n in (("mer", len(rav)), ("dfew", len(crema))):
        got = m[m["benchmark"] == bench].set_index("metric")["value"]
        assert got["n"] == n and got["errors"] == 0
        assert 0 <= got["weighted_f1"] <= 1 and 0 <= got["uar"] <= 1 and got["war"] == got["accuracy"]
    got = m[m["benchmark"] == "emer"].set_index("metric")["value"]
    assert 1 <= got["clue_overlap"] <= 10 and 1 <= got["label_overlap"] <= 10 and got["ov_items"] == len(rav)
    [f] = (res.output / "units").glob("*__mer__*.parquet")
    assert set(pd.read_parquet(f)["labels"].iloc[0]) == set(MER2023_LABELS)


def test_endpoint_judge_end_to_end(tmp_path, checkpoints, camer_bench, eval_shards, chat_server):
    """Units judged by an OpenAI-compatible endpoint (a local server); answers cached for reruns."""
    with chat_server() as srv:
        cfg = make_cfg(tmp_path / "out", [checkpoints["mose"]], (camer_bench, eval_shards),
                       settings=[{"name": "ar_off"}, {"name": "no_video", "drop": "video"}],
                       judge={"kind": "openai", "base_url": srv.url, "model": "judge-x"})
        res = run_eval(cfg)
        assert res.ok, res.failed
        asked = len(srv.requests)
        assert asked > 0 and all(r["body"]["model"] == "judge-x" for r in srv.requests)
    for f in (res.output / "units").glob("*.parquet"):
        df = pd.read_parquet(f)
        ok = df[df["error"].isna()]
        # references "The face looks {label}, while the voice sounds tense.": the reference set is the
        # label's group only, never the voice's misleading "tense" (worried) that the text names
        assert (ok["ref_emotions"].map(list) == ok["label"].map(lambda lab: [lab])).all()
        assert (ok["ref_source"] == "label").all() and ok["judge_error"].isna().all()
        assert ok["ov_precision"].between(0, 1).all() and ok["ov_recall"].between(0, 1).all()
    assert len(list((res.output / "judge_cache").glob("*.json"))) <= asked  # one file per distinct prompt
    m = pd.read_parquet(res.output / "metrics.parquet")
    assert "ov_mean" in set(m["metric"])


def test_a_change_of_judging_rules_invalidates_every_unit(tmp_path, checkpoints, camer_bench, eval_shards, monkeypatch):
    """Units judged under older rules (e.g. a reference set taken from reasoning text) are never reused."""
    from mosear.evaluate import judges
    from mosear.evaluate.units import plan_units

    cfg = make_cfg(tmp_path / "a", [checkpoints["mose"]], (camer_bench, eval_shards), settings=[{"name": "ar_off"}])
    before = [u.unit_id for u in plan_units(cfg)[0]]
    assert [u.unit_id for u in plan_units(cfg)[0]] == before
    monkeypatch.setattr(judges, "SCORING_VERSION", judges.SCORING_VERSION + 1)
    assert not set(u.unit_id for u in plan_units(cfg)[0]) & set(before)


def test_reused_model_gives_the_same_predictions_as_a_fresh_one(tmp_path, checkpoints, camer_bench, eval_shards):
    """The per-worker model cache: a unit after another unit of the same checkpoint (other attention
    mode) predicts exactly what it predicts on a freshly loaded model."""
    from mosear.evaluate import runner
    from mosear.evaluate.units import plan_units, unit_path

    cfg = make_cfg(tmp_path / "a", [checkpoints["mose"]], (camer_bench, eval_shards),
                   settings=[{"name": "ar_on", "ar": True, "ar_fraction": 0.7, "ar_threshold": 0.0},
                             {"name": "ar_off"}])
    (ar_on, ar_off), benches = plan_units(cfg)
    runner._MODEL_CACHE.clear()
    runner.run_unit(cfg, ar_on, benches["camer"])
    fresh = pd.read_parquet(unit_path(cfg.output, ar_on))
    runner.run_unit(cfg, ar_off, benches["camer"])
    model = next(iter(runner._MODEL_CACHE.values()))
    unit_path(cfg.output, ar_on).unlink()
    runner.run_unit(cfg, ar_on, benches["camer"])  # on the cached model, after an ar_off unit
    assert next(iter(runner._MODEL_CACHE.values())) is model
    again = pd.read_parquet(unit_path(cfg.output, ar_on))
    cols = ["key", "pred_label", "text", "share_audio", "share_visual"]
    pd.testing.assert_frame_equal(fresh[cols], again[cols])
    ok = fresh["error"].isna()
    assert (fresh["scores"][ok].map(list) == again["scores"][ok].map(list)).all()
    off = pd.read_parquet(unit_path(cfg.output, ar_off))
    assert (off["share_audio"].dropna() > again["share_audio"].dropna()).all()  # AR really acted
    runner._MODEL_CACHE.clear()
