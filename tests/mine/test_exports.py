"""The CA-MER-style subset files mining writes (``mosear.mine.assemble.write_exports``)."""

from __future__ import annotations

import json

import pandas as pd

from mosear.mine.assemble import write_exports


def _row(key: str, subset: str, origin: str, label: str | None, split: str = "test", **kw) -> dict:
    return {"key": key, "subset": subset, "origin": origin, "label": label, "split": split, "reasoning": "r.",
            "misleading_cue": None, "audio_pred": "sad", "visual_pred": "happy", "margin": 0.0,
            "face_person": "p1", "voice_person": "p1", "face_label": kw.get("face"), "voice_label": kw.get("voice"),
            "target_label": None, "rating_ties": kw.get("ties")}


def test_ambiguous_export_holds_the_rows_with_a_truth_only(tmp_path):
    """Catches: natural or human-rated items whose cues decided no subset not exported (eval scored 1 item
    per subset while 15 test clips with an acted label went unscored), a splice (no true emotion) or a
    human-rated clip with a tied audio-visual vote (no truth) exported in ``ambiguous.json``, or a split
    folder missing the file when it is empty."""
    df = pd.DataFrame([
        _row("nat_amb", "ambiguous", "natural", "sad"),
        _row("nat_amb_val", "ambiguous", "natural", "fear", split="validation"),
        _row("rated_amb", "ambiguous", "human-rated", "angry", ties="audio"),
        _row("rated_av_tie", "ambiguous", "human-rated", "angry", ties="audio,audio_visual"),
        _row("nat_va", "video_aligned", "natural", "happy"),
        _row("splice", "spliced", "spliced", None, face="happy", voice="sad"),
    ])
    write_exports(tmp_path, df)
    top = json.loads((tmp_path / "ambiguous.json").read_text())
    assert set(top) == {"nat_amb", "nat_amb_val", "rated_amb"}
    assert top["nat_amb"]["label"] == "sad" and top["rated_amb"]["origin"] == "human-rated"
    assert set(json.loads((tmp_path / "test" / "ambiguous.json").read_text())) == {"nat_amb", "rated_amb"}
    assert set(json.loads((tmp_path / "validation" / "ambiguous.json").read_text())) == {"nat_amb_val"}
    assert json.loads((tmp_path / "train" / "ambiguous.json").read_text()) == {}
    assert set(json.loads((tmp_path / "test" / "spliced.json").read_text())) == {"splice"}
    assert set(json.loads((tmp_path / "test" / "video_aligned.json").read_text())) == {"nat_va"}
