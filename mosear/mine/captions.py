"""Reasoning captions built from evidence (MERR-style coarse annotations), optionally LLM-refined.

A caption says what the face shows (the expression model's reading and its intensity), what the voice
does (pitch, loudness, rate and voice quality from the eGeMAPS parameters, in words), what is said
(the transcript), and concludes with the true label, naming the misleading cue in a conflict clip.

Word thresholds (our choices, for eGeMAPS v02 functionals on 16 kHz speech): pitch variability
(F0 coefficient of variation) < 0.08 "flat", > 0.2 "lively"; loudness mean < 0.5 "soft", > 1.5 "loud";
voiced segments per second < 2 "slow", > 4 "fast"; HNR < 5 dB "breathy or rough", > 10 dB "clear".

:class:`LLMCaptionRefiner` rewrites a caption through any OpenAI-compatible ``/chat/completions``
endpoint; on any failure the template caption is kept and the error recorded.
"""

from __future__ import annotations

import math
from typing import Any

import httpx


def _voice_words(desc: dict[str, Any] | None) -> str:
    if not desc or desc.get("silent"):
        return "The voice is silent or missing, so the audio gives no emotional cue."
    def val(k: str) -> float:
        v = desc.get(k)
        return float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else float("nan")
    parts = []
    pv = val("pitch_var")
    if not math.isnan(pv):
        parts.append("flat, monotone pitch" if pv < 0.08 else "lively, varied pitch" if pv > 0.2 else "moderately varied pitch")
    ld = val("loudness")
    if not math.isnan(ld):
        parts.append("low loudness" if ld < 0.5 else "high, forceful loudness" if ld > 1.5 else "moderate loudness")
    rate = val("rate")
    if not math.isnan(rate):
        parts.append("a slow pace" if rate < 2 else "a fast pace" if rate > 4 else "an even pace")
    hnr = val("hnr_db")
    if not math.isnan(hnr):
        parts.append("a breathy or rough quality" if hnr < 5 else "a clear quality" if hnr > 10 else "a slightly strained quality")
    if len(parts) > 1:
        parts[-1] = "and " + parts[-1]
    return ("The voice has " + ", ".join(parts) + ".") if parts else "The voice gives few measurable cues."


def _face_words(desc: dict[str, Any] | None) -> str:
    if not desc or not desc.get("face"):
        return "No face is visible in the sampled frames, so the face gives no cue."
    inten = desc.get("intensity", 0.0)
    strength = "a strong" if inten > 0.6 else "a mild" if inten > 0.3 else "a faint"
    return (f"The face shows {strength} {desc.get('top', 'unclear')} expression "
            f"(expression model score {desc.get('top_score', 0.0):.2f}, steady in "
            f"{100 * desc.get('consistency', 0.0):.0f}% of the frames with a face).")


def build_caption(row: dict[str, Any]) -> str:
    """Template caption for one mined clip. ``row`` holds ``label, subset, audio_pred, visual_pred,
    audio_desc, visual_desc, text_desc`` (as in ``conflicts.parquet`` before serialisation)."""
    label = row.get("label") or "unknown"
    sents = [_face_words(row.get("visual_desc")), _voice_words(row.get("audio_desc"))]
    text = (row.get("text_desc") or {}).get("transcript")
    sents.append(f'The speaker says: "{text}".' if text else "There is no transcript.")
    ap, vp = row.get("audio_pred"), row.get("visual_pred")
    subset = row.get("subset")
    if subset == "consistent":
        sents.append(f"Face and voice agree, so the person feels {label}.")
    elif subset == "video_aligned":
        sents.append(f"The voice sounds {ap}, but that cue is misleading; the facial expression reveals the "
                     f"true emotion: {label}.")
    elif subset == "audio_aligned":
        sents.append(f"The face looks {vp}, but that cue is misleading; the voice carries the true emotion: "
                     f"{label}.")
    else:
        sents.append(f"The cues are weak or mixed (voice: {ap or 'unclear'}, face: {vp or 'unclear'}); "
                     f"the annotated emotion is {label}.")
    return " ".join(sents)


class LLMCaptionRefiner:
    """Rewrite captions with a chat model behind an OpenAI-compatible endpoint.

    ``base_url`` is the API root (``http://host:port/v1``); ``api_key`` is sent as a Bearer token when
    given. ``refine`` returns ``(caption, error)``: the refined text, or the original and the reason.
    """

    SYSTEM = ("You rewrite emotion-reasoning annotations of video clips. Keep every fact and the final "
              "emotion label; write fluent English in at most four sentences.")

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0,
                 max_tokens: int = 200) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def refine(self, caption: str, label: str | None) -> tuple[str, str | None]:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.SYSTEM},
                {"role": "user", "content": f"True label: {label}.\nAnnotation: {caption}"},
            ],
            "temperature": 0.2,
            "max_tokens": self.max_tokens,
        }
        try:
            r = self._client.post(self.url, json=body)
            r.raise_for_status()
            text = r.json()["choices"][0]["message"]["content"].strip()
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            return caption, f"{type(exc).__name__}: {exc}"
        if not text:
            return caption, "empty completion"
        return text, None

    def close(self) -> None:
        self._client.close()
