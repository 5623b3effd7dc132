"""Reasoning captions from evidence, and the LLM refiner against a local OpenAI-compatible server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mosear.evaluate.judges import LexiconJudge
from mosear.mine.captions import LLMCaptionRefiner, build_caption, build_reasoning

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
    assert "strong expression that reads as sad" in c and "lively, varied pitch" in c and "fast pace" in c
    assert '"Kids are talking by the door"' in c
    assert c.endswith("voice sounds happy (cross-fitted voice classifier), but that cue is misleading.")
    assert "true emotion: sad." in c
    a = build_caption({**ROW, "subset": "audio_aligned", "visual_pred": "angry"})
    assert "face looks angry (cross-fitted face classifier), but that cue is misleading" in a
    none = build_caption({"label": "sad", "subset": "ambiguous", "visual_desc": {"face": False},
                          "audio_desc": {"silent": True}, "text_desc": None})
    assert "No face is visible" in none and "silent or missing" in none and "no transcript" in none


def test_face_sentence_uses_the_evidence_that_assigned_the_subset():
    """The zero-shot expression model says neutral, the cross-fitted classifier (which placed the clip in
    video_aligned) says sad: the face sentence says sad and never neutral."""
    row = {**ROW, "visual_desc": {**ROW["visual_desc"], "top": "neutral", "top_score": 0.4}}
    reasoning, cue = build_reasoning(row)
    assert "reads as sad (cross-fitted face classifier)" in reasoning and "neutral" not in reasoning
    human = build_reasoning({**row, "face_cue": {"label": "sad", "score": 0.75, "source": "visual-only human ratings"}})[0]
    assert "reads as sad (visual-only human ratings, 0.75)" in human


@pytest.mark.parametrize("subset, audio, visual, misleading", [
    ("video_aligned", "happy", "sad", "happy"),
    ("audio_aligned", "sad", "angry", "angry"),
])
def test_reasoning_keeps_the_misleading_cue_in_its_own_field(subset, audio, visual, misleading):
    reasoning, cue = build_reasoning({**ROW, "subset": subset, "audio_pred": audio, "visual_pred": visual})
    judge = LexiconJudge()
    assert judge.emotions(reasoning) == {"sad"}  # only the true emotion
    assert misleading in cue and "misleading" in cue and misleading not in reasoning
    consistent = build_reasoning({**ROW, "subset": "consistent", "audio_pred": "sad"})
    assert consistent[1] is None and judge.emotions(consistent[0]) == {"sad"}


def test_refiner_uses_the_openai_api_and_falls_back_on_errors():
    """Catches: a caption endpoint that is down or answers 5xx silently replaced by the template (mutation:
    ``refine`` catching ``CaptionServiceError``): the mined captions would be cached as complete without the
    LLM. Such failures raise; only a bad reply is the row's data error (template kept, reason recorded)."""
    from mosear.mine.captions import CaptionServiceError

    with LocalOpenAIServer() as srv:
        ref = LLMCaptionRefiner(srv.base_url, model="tiny-local", api_key="k123")
        text, err = ref.refine(build_caption(ROW), "sad")
        assert err is None and text.endswith("Overall, the person is sad.") and text != build_caption(ROW)
        req = srv.requests[-1]
        assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k123"
        assert req["body"]["model"] == "tiny-local" and req["body"]["messages"][0]["role"] == "system"
        bad = LLMCaptionRefiner(srv.base_url + "/fail", model="tiny-local", retries=1, backoff_s=0.01)
        with pytest.raises(CaptionServiceError, match="after 2 attempts; last error: HTTP 500"):
            bad.refine("original caption", "sad")
        junk = LLMCaptionRefiner(srv.base_url + "/garbage", model="tiny-local", retries=0)
        text, err = junk.refine("original caption", "sad")
        assert text == "original caption" and err.startswith("unparseable_reply:")
        ref.close()
        bad.close()
        junk.close()
    gone = LLMCaptionRefiner(srv.base_url, model="m", timeout_s=2, retries=0)  # shut down: connection refused
    with pytest.raises(CaptionServiceError, match="Connect"):
        gone.refine("kept", "sad")
