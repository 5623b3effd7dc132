"""Fail early: when mining ends, the evaluation needs the benchmark cannot meet are in summary.json
(``cannot_run``, ``warnings``) and on the terminal, before anything trains."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mosear.mine.summary import cannot_run


def _rows(cells: dict[tuple[str, str], int]) -> pd.DataFrame:
    rows = []
    for (split, subset), n in cells.items():
        for i in range(n):
            spliced = subset == "spliced"
            rows.append({"split": split, "subset": subset, "origin": "spliced" if spliced else "natural",
                         "face_label": "sad" if spliced else None, "voice_label": "happy" if spliced else None})
    return pd.DataFrame(rows)


def test_a_validation_split_without_both_aligned_subsets_cannot_calibrate_ar():
    """Catches: AR calibration found impossible only at eval time, after training (issue 21: 'setting
    ar_calibrated calibrates AR on the validation split ... holds {video_aligned: 0, audio_aligned: 0}')."""
    full = {(s, k): 2 for s in ("train", "validation", "test") for k in ("consistent", "video_aligned", "audio_aligned", "spliced")}
    assert cannot_run(_rows(full)) == []
    no_audio = _rows({**full, ("validation", "audio_aligned"): 0})
    (entry,) = cannot_run(no_audio)
    assert entry["setting"] == "ar_calibrated" and entry["split"] == "validation"
    assert "'audio_aligned': 0" in entry["reason"] and "'video_aligned': 2" in entry["reason"]
    no_consistent = cannot_run(_rows({**full, ("validation", "consistent"): 0}))  # the rule compares with it
    assert [c["setting"] for c in no_consistent] == ["ar_calibrated"]
    empty_test = cannot_run(_rows({**full, ("test", "video_aligned"): 0, ("test", "spliced"): 0}))
    assert {(c["setting"], c["split"]) for c in empty_test} == {("subset:video_aligned", "test"), ("preference", "test")}


@pytest.mark.slow
def test_natural_only_sample_corpus_says_what_cannot_run_when_mining_ends(sample_shards, tmp_path, capsys):
    """Catches: a user's own corpus (datasets/samples/corpus.yaml: natural clips, no splices) failing
    minutes later at eval. Mining it names every setting it cannot run, in summary.json and on the
    terminal, with the people of each split (~60 s: marked slow)."""
    from mosear.cli import main

    out = tmp_path / "mined"
    assert main(["mine", f"shards={sample_shards}", f"output={out}", "workers=1", "progress=false"]) == 0
    printed = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["cannot_run"], s["splits"]["by_subset_origin"]
    assert {c["setting"] for c in s["cannot_run"]} & {"ar_calibrated", "subset:video_aligned", "subset:audio_aligned"}
    for c in s["cannot_run"]:
        assert f"WARNING cannot run {c['setting']} ({c['split']}): {c['reason']}" in printed
    people = s["splits"]["people"]
    assert s["splits"]["person_disjoint"] and len(people["test"]) >= 2 and len(people["validation"]) >= 1
    assert "people: train: " in printed
    assert s["train_mix"]["splice_target"] == "none" and s["human_rated"]["items"] == 6
