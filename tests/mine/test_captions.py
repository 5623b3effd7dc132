"""Reasoning captions from evidence, and the LLM refiner against a local OpenAI-compatible server."""

from __future__ import annotations

import sys
from pathlib import Path

from mosear.mine.captions import LLMCaptionRefiner, build_caption

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import LocalOpenAIServer  # noqa: E402

ROW = {
    "label": "sad", "subset": "video_aligned", "audio_pred": "happy", "visual_pred": "sad",
    "visual_desc": {"face": True, "top": "sad", "top_score": 0.71, "intensity": 0.8, "consistency": 0.9},
    "audio_desc": {"pitch_var": 0.3, "loudness": 2.0, "rate": 4.5, "hnr_db": 12.0},
    "text_desc": {"transcript": "Kids are talking by the door"},
}


def test_caption_names_cues_transcript_and_the_misleading_modality():
    c = build_caption(ROW)
    assert "strong sad expression" in c and "lively, varied pitch" in c and "fast pace" in c
    assert '"Kids are talking by the door"' in c
    assert "voice sounds happy, but that cue is misleading" in c and c.endswith("true emotion: sad.")
    a = build_caption({**ROW, "subset": "audio_aligned", "visual_pred": "angry"})
    assert "face looks angry, but that cue is misleading" in a
    none = build_caption({"label": "sad", "subset": "ambiguous", "visual_desc": {"face": False},
                          "audio_desc": {"silent": True}, "text_desc": None})
    assert "No face is visible" in none and "silent or missing" in none and "no transcript" in none


def test_refiner_uses_the_openai_api_and_falls_back_on_errors():
    with LocalOpenAIServer() as srv:
        ref = LLMCaptionRefiner(srv.base_url, model="tiny-local", api_key="k123")
        text, err = ref.refine(build_caption(ROW), "sad")
        assert err is None and text.endswith("Overall, the person is sad.") and text != build_caption(ROW)
        req = srv.requests[-1]
        assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k123"
        assert req["body"]["model"] == "tiny-local" and req["body"]["messages"][0]["role"] == "system"
        bad = LLMCaptionRefiner(srv.base_url + "/fail", model="tiny-local")
        text, err = bad.refine("original caption", "sad")
        assert text == "original caption" and "500" in err
        ref.close()
        bad.close()
    gone = LLMCaptionRefiner(srv.base_url, model="m", timeout_s=2)  # server shut down: connection refused
    text, err = gone.refine("kept", "sad")
    assert text == "kept" and err
