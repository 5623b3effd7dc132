"""What a mined item is (a clip with a truth, or a splice with two cues) and whose people it is made of,
on a mined output written by the test in the contract's layout (conflicts.parquet + per-split JSON files,
splices in their own spliced.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mosear.evaluate import metrics as M
from mosear.evaluate.config import BenchmarkSpec

SUBSETS = ("video_aligned", "audio_aligned", "consistent")


def _mined(root: Path, *, old_style: bool = False, ambiguous: bool = False) -> Path:
    """A mined folder: test actors 03 and 09 (natural clips, same-actor splices), CREMA-D 1001/1002 (a
    human-rated conflict and a face x voice swap). ``old_style``: splices listed in the accuracy subsets with
    a coin-flip label, as mined before issue 21. ``ambiguous``: ``test/ambiguous.json`` with three more items
    with a truth whose cues decided no subset (two natural clips, one human-rated)."""
    rows = []
    files: dict[str, dict] = {s: {} for s in (*SUBSETS, "spliced", *(("ambiguous",) if ambiguous else ()))}
    if ambiguous:
        for k, origin, lab, who in (("ravdess__03-amb", "natural", "neutral", "03"),
                                    ("ravdess__09-amb", "natural", "sad", "09"),
                                    ("crema_d__1001_IEO_ANG", "human-rated", "angry", "1001")):
            rows.append({"key": k, "origin": origin, "label": lab, "face_label": lab, "voice_label": lab,
                         "speaker": who, "subset": "ambiguous", "split": "test"})
            files["ambiguous"][k] = {"label": lab, "reason": "The cues are weak or mixed.", "origin": origin}
    emo = ["happy", "sad", "angry", "fear"]
    for a in ("03", "09"):
        for i, lab in enumerate(emo):  # natural clips: face and voice agree
            k = f"ravdess__{a}-{i}"
            rows.append({"key": k, "origin": "natural", "label": lab, "face_label": lab, "voice_label": lab,
                         "speaker": a, "subset": "consistent", "split": "test"})
            files["consistent"][k] = {"label": lab, "reason": f"Face and voice agree, so the person feels {lab}."}
        for i in range(4):  # same-actor splices: face of one take, voice of another
            face, voice = emo[i], emo[(i + 1) % 4]
            k = f"splice__{a}-{i}"
            rows.append({"key": k, "origin": "spliced", "label": None, "face_label": face, "voice_label": voice,
                         "face_person": a, "voice_person": a, "speaker": a, "subset": None, "split": "test"})
            if old_style:  # the key-hash coin flip between the cues
                sub, lab = (("video_aligned", face) if i % 2 else ("audio_aligned", voice))
                files[sub][k] = {"label": lab, "reason": f"The voice sounds {voice}, but that cue is misleading."}
            else:
                files["spliced"][k] = {"face_label": face, "voice_label": voice, "split": "test"}
    # human-rated conflicts (truth = the audio-visual vote) and a 1001-face x 1002-voice swap
    for k, sub, lab, face, voice in (("crema_d__1001_DFA_HAP", "video_aligned", "happy", "happy", "neutral"),
                                     ("crema_d__1001_DFA_FEA", "audio_aligned", "fear", "neutral", "fear")):
        rows.append({"key": k, "origin": "human-rated", "label": lab, "face_label": face, "voice_label": voice,
                     "speaker": "1001", "subset": sub, "split": "test"})
        files[sub][k] = {"label": lab, "reason": "rated"}
    k = "swap__1001x1002"
    rows.append({"key": k, "origin": "spliced", "label": None, "face_label": "happy", "voice_label": "sad",
                 "face_person": "1001", "voice_person": "1002", "speaker": "1001", "subset": None, "split": "test"})
    if not old_style:
        files["spliced"][k] = {"face_label": "happy", "voice_label": "sad"}
    root.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "conflicts.parquet")
    (root / "test").mkdir()
    for s, entries in files.items():
        if s == "spliced" and old_style:
            continue
        (root / "test" / f"{s}.json").write_text(json.dumps(entries))
    return root


def _bench(root: Path):
    from mosear.evaluate.benchmark_files import load_benchmark
    from mosear.evaluate.items import annotate

    return annotate(load_benchmark(BenchmarkSpec(name="m", format="mined", path=str(root), shards=str(root))))


def _table(bench, answer) -> pd.DataFrame:
    """A prediction table as a unit writes it, each item answered by ``answer(item)``."""
    return pd.DataFrame([{"key": it.key, "subset": it.subset, "label": it.label, "pred_label": answer(it),
                          "group": it.group, "origin": it.origin, "face_label": it.face_label,
                          "voice_label": it.voice_label, "error": None} for it in bench.items])


def _truth_rule(it) -> str:
    """The oracle: a conflict's truth is the cue its subset names; a consistent clip's is either cue."""
    return it.voice_label if it.subset == "audio_aligned" else it.face_label


@pytest.mark.parametrize("old_style", [False, True])
def test_splices_are_scored_for_preference_never_for_accuracy(tmp_path, old_style):
    """The bug (issue 21): a splice's label was a key-hash coin flip between its two cues, so any model reading
    either cue consistently scored 0.5 on spliced conflicts. Splices leave the accuracy subsets (also when an
    older mined output lists them there), a truth-rule oracle scores >= 0.9 on both accuracy conflict
    subsets, and a model that always follows the voice gets preference index +1 on the splices."""
    bench = _bench(_mined(tmp_path / "mined", old_style=old_style))
    spliced = [it for it in bench.items if it.subset == "spliced"]
    assert len(spliced) == (8 if old_style else 9) and all(it.label is None and it.reference is None for it in spliced)
    assert bench.notes["moved_splices"] == (8 if old_style else 0)
    per = M.subset_scores(_table(bench, _truth_rule))
    assert per["video_aligned"]["accuracy"] >= 0.9 and per["audio_aligned"]["accuracy"] >= 0.9
    assert per["video_aligned"]["n"] == 1 and per["audio_aligned"]["n"] == 1  # the human-rated conflicts only
    voice = M.preference(_table(bench, lambda it: it.voice_label or it.label))
    assert voice["preference_index"] == 1.0 and voice["face_rate"] == 0.0 and voice["n"] == len(spliced)
    face = M.preference(_table(bench, lambda it: it.face_label or it.label))
    assert face["preference_index"] == -1.0
    neither = M.preference(_table(bench, lambda it: "disgust"))
    assert neither["neither_rate"] == 1.0 and neither["preference_index"] == 0.0


def test_intervals_resample_people_and_a_natural_clip_enters_once(tmp_path):
    """The bug (issue 21): intervals resampled takes, and a natural clip entered the bootstrap as two
    independent factors (its take twice). Mined items are grouped by people: a natural clip and a same-actor
    splice by their one actor (drawn once), a 1001 x 1002 swap by both people."""
    from mosear.evaluate.intervals import group_codes, resample_weights

    bench = _bench(_mined(tmp_path / "mined"))
    assert bench.notes["resampled_by"] == "people" and bench.notes["people"] == ["03", "09", "1001", "1002"]
    by_key = {it.key: it.group for it in bench.items}
    assert by_key["ravdess__03-0"] == by_key["splice__03-1"] == "face=person:03|voice=person:03"
    assert by_key["swap__1001x1002"] == "face=person:1001|voice=person:1002"
    t = _table(bench, _truth_rule)
    codes = group_codes(t, "group")
    assert codes.shape == (len(t), 2) and codes.max() == 3
    same = t["key"].str.startswith(("ravdess", "splice", "crema")).to_numpy()
    assert (codes[same, 1] == -1).all() and (codes[~same, 1] >= 0).all()
    W = next(resample_weights(codes, n_boot=64))
    counts = np.stack([W[:, np.flatnonzero(codes[:, 0] == u)[0]] for u in range(2)], 1)  # actors 03, 09
    first_natural = {u: np.flatnonzero((codes[:, 0] == u) & (codes[:, 1] == -1))[0] for u in range(2)}
    for u in range(2):  # a natural clip is drawn as often as its actor, not its actor's count squared
        assert np.array_equal(W[:, first_natural[u]], counts[:, u])


def test_people_unknown_falls_back_to_takes_and_says_so(tmp_path):
    """Without speakers the groups stay recordings (takes), and the notes say it (the report prints it)."""
    root = _mined(tmp_path / "mined")
    df = pd.read_parquet(root / "conflicts.parquet").drop(columns=["speaker", "face_person", "voice_person"])
    df["face_take"], df["voice_take"] = df["key"], df["key"]
    df.to_parquet(root / "conflicts.parquet")
    bench = _bench(root)
    assert bench.notes["resampled_by"] == "takes" and bench.notes["people"] == []


def test_a_splice_without_its_cues_is_a_clear_error(tmp_path):
    from mosear.evaluate.benchmark_files import BenchmarkFormatError

    root = _mined(tmp_path / "mined")
    (root / "test" / "spliced.json").write_text(json.dumps({"nowhere": {"face_label": "happy"}}))
    with pytest.raises(BenchmarkFormatError, match=r"spliced.json: row 'nowhere': a splice needs face_label and voice_label"):
        _bench(root)


def test_settings_that_cannot_run_are_skipped_with_the_reason(tmp_path):
    """The bug (issue 21): a corpus whose validation split cannot calibrate AR failed at eval, after training.
    The mining summary's cannot_run (or an empty validation subset found at plan time) skips the calibrated
    settings with the reason; asked for alone, it stays an error."""
    from mosear.config import load_config
    from mosear.evaluate.benchmark_files import BenchmarkFormatError
    from mosear.evaluate.config import EvalConfig
    from mosear.evaluate.units import describe_plan, plan_units

    root = _mined(tmp_path / "mined")
    (root / "validation").mkdir()
    for s in SUBSETS:  # a validation split without conflicts
        (root / "validation" / f"{s}.json").write_text(json.dumps({} if s != "consistent" else {"ravdess__03-0": {"label": "happy"}}))
    shards = tmp_path / "shards"
    shards.mkdir()
    base = {"checkpoints": ["base"], "output": str(tmp_path / "out"),
            "benchmarks": [{"name": "m", "format": "mined", "path": str(root), "shards": str(shards)}]}
    both = [{"name": "ar_off"}, {"name": "ar_calibrated", "ar": True, "calibrate": True}]
    cfg = load_config(EvalConfig, overrides={**base, "settings": both})
    units, benches = plan_units(cfg)
    assert [u.setting.name for u in units] == ["ar_off"]
    reason = benches["m"].notes["skipped"]["ar_calibrated"]
    assert "validation split" in reason and "empty" in reason
    assert describe_plan(cfg, benches)["benchmarks"]["m"]["skipped"] == {"ar_calibrated": reason}
    # the summary says so first (mosear mine's cannot_run): its reason is the one recorded
    (root / "summary.json").write_text(json.dumps({"cannot_run": [
        {"setting": "ar_calibrated", "split": "validation", "reason": "no video_aligned or audio_aligned item"}]}))
    _units, benches = plan_units(cfg)
    assert "mining summary says" in benches["m"].notes["skipped"]["ar_calibrated"]
    alone = load_config(EvalConfig, overrides={**base, "settings": both[1:]})
    with pytest.raises(BenchmarkFormatError, match="ar_calibrated.*no video_aligned or audio_aligned item"):
        plan_units(alone)


def test_a_validation_split_whose_conflicts_are_all_splices_cannot_calibrate(tmp_path):
    """An older mined output lists coin-flip splices in validation's conflict subsets: they pass the file-level
    count, but carry no truth. Once moved out, the split has no conflict with a truth: skipped at plan time
    with the reason, not failed inside the unit after training."""
    import shutil

    from mosear.config import load_config
    from mosear.evaluate.config import EvalConfig
    from mosear.evaluate.units import plan_units

    root = _mined(tmp_path / "mined", old_style=True)
    shutil.copytree(root / "test", root / "validation")
    vdir = root / "validation"
    for s in ("video_aligned", "audio_aligned"):  # splices only
        d = json.loads((vdir / f"{s}.json").read_text())
        (vdir / f"{s}.json").write_text(json.dumps({k: v for k, v in d.items() if k.startswith("splice")}))
    (tmp_path / "shards").mkdir()
    cfg = load_config(EvalConfig, overrides={
        "checkpoints": ["base"], "output": str(tmp_path / "out"),
        "benchmarks": [{"name": "m", "format": "mined", "path": str(root), "shards": str(tmp_path / "shards"),
                        "split": "test"}],
        "settings": [{"name": "ar_off"}, {"name": "ar_calibrated", "ar": True, "calibrate": True}]})
    units, benches = plan_units(cfg)
    assert [u.setting.name for u in units] == ["ar_off"]
    assert "items with a truth (splices have none)" in benches["m"].notes["skipped"]["ar_calibrated"]


def test_ambiguous_items_with_a_truth_are_scored_but_stay_out_of_the_conflict_measures(tmp_path):
    """The bug (issue 21): 15 of the test split's 18 natural clips were mined ``ambiguous`` (weak cross-person
    cue classifiers) and eval never read them, so the accuracy table rested on 1 item per subset. Read from
    ``ambiguous.json``, they count in "all with a truth" (accuracy and weighted F1, methods and the
    training-majority row alike) and leave the conflict gap and conflict-mean, values and intervals, as
    they were."""
    from mosear.evaluate.aggregate import _unit_rows
    from mosear.evaluate.baseline import baseline_accuracy
    from mosear.evaluate.headline import ALL_TRUTH, headline_sentence, method_table, render_text

    without = _bench(_mined(tmp_path / "without"))
    bench = _bench(_mined(tmp_path / "with", ambiguous=True))
    amb = [it for it in bench.items if it.subset == "ambiguous"]
    assert sorted(it.key for it in amb) == ["crema_d__1001_IEO_ANG", "ravdess__03-amb", "ravdess__09-amb"]
    assert {it.origin for it in amb} == {"natural", "human-rated"} and all(it.label for it in amb)
    assert bench.notes["subsets"]["ambiguous"] == 3 and any(f.name == "ambiguous.json" for f in bench.files)

    def rows(b, answer):
        t = _table(b, answer).assign(ov_precision=np.nan, ov_recall=np.nan, clue_overlap=np.nan, label_overlap=np.nan)
        out = _unit_rows(t, {"checkpoint": "lora", "benchmark": "m", "unit_id": "u",
                                             "setting": {"name": "ar_off"}})
        return {(r["subset"], r["metric"]): (r["value"], r["ci_low"], r["ci_high"]) for r in out}

    got, before = rows(bench, _truth_rule), rows(without, _truth_rule)
    assert got[("all", "n")][0] == 8 + 1 + 1 + 3 and before[("all", "n")][0] == 10  # splices never counted
    assert got[("ambiguous", "accuracy")][0] == 1.0 and got[("ambiguous", "n")][0] == 3
    for metric in ("conflict_gap", "conflict_mean"):
        assert got[("all", metric)] == before[("all", metric)], metric
    wrong_on_amb = rows(bench, lambda it: "disgust" if it.subset == "ambiguous" else _truth_rule(it))
    assert wrong_on_amb[("all", "accuracy")][0] == 10 / 13 and wrong_on_amb[("all", "weighted_f1")][0] < 1.0
    assert wrong_on_amb[("all", "conflict_mean")] == before[("all", "conflict_mean")]

    m = pd.DataFrame([{"checkpoint": "lora", "benchmark": "m", "setting": "ar_off", "drop": None, "subset": s,
                       "metric": k, "value": v, "ci_low": lo, "ci_high": hi}
                      for (s, k), (v, lo, hi) in wrong_on_amb.items()])
    base = {"label": "sad", **baseline_accuracy(bench.items, "sad")}
    assert base["subsets"]["all"]["n"] == 13 and base["subsets"]["all"]["value"] == 3 / 13  # 2 consistent + 1 amb
    assert base["weighted_f1"]["n"] == 13 and 0 < base["weighted_f1"]["value"] < 3 / 13
    t = method_table(m, "m", {"LoRA": "lora/ar_off"}, base)
    assert list(t[f"n {ALL_TRUTH}"]) == [13, 13]
    assert t[ALL_TRUTH].tolist() == [10 / 13, 3 / 13]
    s = headline_sentence(t, n_labels=11)
    assert f"{ALL_TRUTH} (n = 13)" in render_text(t).splitlines()[0]
    assert "13 with a truth in all" in s and "LoRA has the highest accuracy on all 13 items with a truth, 0.77" in s


def test_calibration_reads_the_three_subsets_only(tmp_path):
    """Catches: ``ambiguous.json`` items entering AR calibration (the rule reads consistent and the two
    conflict subsets; extra items would change nothing but cost validation passes under every grid setting)."""
    import shutil

    from mosear.evaluate.benchmark_files import load_calibration_split

    root = _mined(tmp_path / "mined", ambiguous=True)
    shutil.copytree(root / "test", root / "validation")
    spec = BenchmarkSpec(name="m", format="mined", path=str(root), shards=str(root), split="test")
    cal = load_calibration_split(spec, "validation", "ar_calibrated")
    assert {it.subset for it in cal.items if it.label} == {"consistent", "video_aligned", "audio_aligned"}
