"""Reasoning captions built from evidence (MERR-style coarse annotations), optionally LLM-refined.

A caption says what the face shows (the emotion of the evidence that assigned the subset, the
cross-fitted face classifier or the visual-only human ratings, and the expression model's label-free
intensity), what the voice does (pitch, loudness, rate and voice quality from the eGeMAPS parameters, in
words), what is said (the transcript), and concludes with the true label. In a conflict clip the
misleading modality's reading is kept apart as ``misleading_cue`` (:func:`build_reasoning`), so the
reasoning never names the emotion that would fool a reader.

Word thresholds (our choices, for eGeMAPS v02 functionals on 16 kHz speech): pitch variability
(F0 coefficient of variation) < 0.08 "level, monotone", > 0.2 "lively"; loudness mean < 0.5 "soft", > 1.5 "loud";
voiced segments per second < 2 "slow", > 4 "fast"; HNR < 5 dB "breathy or rough", > 10 dB "clear".

:class:`LLMCaptionRefiner` rewrites a caption through any OpenAI-compatible ``/chat/completions``
endpoint (the shared client, :func:`mosear.evaluate.chat.post_chat`, with its retries). An error is never
a result (:mod:`mosear.item_errors`): a reply that is no usable caption (not a chat completion, empty) or
a request refused for this caption (HTTP 400, 413, 415, 422) is a data error of that row: the template is
kept and ``caption_error`` says why (counted by reason in ``summary.json``'s ``caption_errors`` and
in the log). An endpoint that cannot be reached, times out, answers 5xx/429 after the retries or refuses
the key (401, 403, ...) raises :class:`CaptionServiceError`: the assembly fails and nothing is committed,
so a rerun with the endpoint back refines every caption.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from mosear.evaluate.chat import post_chat


def _voice_words(desc: dict[str, Any] | None) -> str:
    if not desc or desc.get("silent"):
        return "The voice is silent or missing, so the audio gives no emotional cue."
    def val(k: str) -> float:
        v = desc.get(k)
        return float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else float("nan")
    parts = []
    pv = val("pitch_var")
    if not math.isnan(pv):
        parts.append("level, monotone pitch" if pv < 0.08 else "lively, varied pitch" if pv > 0.2 else "moderately varied pitch")
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


def _strength(desc: dict[str, Any]) -> str:
    inten = desc.get("intensity", 0.0)  # 1 - the expression model's neutral score: label-free
    return "strong" if inten > 0.6 else "mild" if inten > 0.3 else "faint"


def _cue(row: dict[str, Any], mod: str) -> dict[str, Any] | None:
    """The evidence that assigned the subset for one modality (``face_cue`` / ``voice_cue``:
    ``{"label", "score", "source"}``); by default the cross-fitted classifier's prediction."""
    cue = row.get(f"{'face' if mod == 'visual' else 'voice'}_cue")
    if cue is not None:
        return cue if cue.get("label") else None
    pred = row.get(f"{mod}_pred")
    return {"label": pred, "score": None, "source": f"cross-fitted {'face' if mod == 'visual' else 'voice'} "
            "classifier"} if pred else None


def _reading(cue: dict[str, Any]) -> str:
    score = cue.get("score")
    return f"{cue['source']}" + (f", {score:.2f}" if isinstance(score, (int, float)) else "")


def _face_words(desc: dict[str, Any] | None, cue: dict[str, Any] | None, name_label: bool = True) -> str:
    """The face sentence. It names the emotion the subset was assigned with (``cue``), never the
    zero-shot expression model's own label, so the sentence and the subset cannot disagree; the
    expression model contributes only its label-free intensity."""
    if not desc or not desc.get("face"):
        return "No face is visible in the sampled frames, so the face gives no cue."
    strength = _strength(desc)
    if cue is None:
        return f"The face shows a {strength} expression that no face reading could place."
    if not name_label:
        return f"The face shows a {strength} expression."
    return f"The face shows a {strength} expression that reads as {cue['label']} ({_reading(cue)})."


def build_reasoning(row: dict[str, Any]) -> tuple[str, str | None]:
    """``(reasoning, misleading_cue)`` for one mined clip.

    ``row`` holds ``label, subset, audio_pred, visual_pred, audio_desc, visual_desc, text_desc`` and
    optionally ``face_cue`` / ``voice_cue`` (the evidence that assigned the subset, see :func:`_cue`;
    human ratings for human-rated clips). The reasoning names only the true emotion's evidence; in a
    conflict clip the misleading modality's reading is the separate ``misleading_cue`` sentence (None
    in consistent and ambiguous clips), so no reference built from the reasoning can include it.
    """
    label = row.get("label") or "unknown"
    subset = row.get("subset")
    face, voice = _cue(row, "visual"), _cue(row, "audio")
    sents = [_face_words(row.get("visual_desc"), face, name_label=subset != "audio_aligned"),
             _voice_words(row.get("audio_desc"))]
    text = (row.get("text_desc") or {}).get("transcript")
    sents.append(f'The speaker says: "{text}".' if text else "There is no transcript.")
    cue = None
    if subset == "consistent":
        sents.append(f"Face and voice agree, so the person feels {label}.")
    elif subset == "video_aligned":
        sents.append(f"The facial expression reveals the true emotion: {label}.")
        cue = f"The voice sounds {voice['label'] if voice else 'different'}" + \
            (f" ({_reading(voice)})" if voice else "") + ", but that cue is misleading."
    elif subset == "audio_aligned":
        sents.append(f"The voice carries the true emotion: {label}.")
        cue = f"The face looks {face['label'] if face else 'different'}" + \
            (f" ({_reading(face)})" if face else "") + ", but that cue is misleading."
    else:
        sents.append(f"The cues are weak or mixed (voice: {voice['label'] if voice else 'unclear'}, face: "
                     f"{face['label'] if face else 'unclear'}); the annotated emotion is {label}.")
    return " ".join(sents), cue


def build_caption(row: dict[str, Any]) -> str:
    """The whole caption: the reasoning followed by the misleading cue, if any (the training target's
    text; see :func:`build_reasoning`)."""
    reasoning, cue = build_reasoning(row)
    return f"{reasoning} {cue}" if cue else reasoning


class CaptionServiceError(RuntimeError):
    """The caption endpoint failed as a service (unreachable, 5xx, 401/403): the mining stage fails."""


class _Rejected(Exception):
    pass


class _BadReply(Exception):
    pass


class LLMCaptionRefiner:
    """Rewrite captions with a chat model behind an OpenAI-compatible endpoint.

    ``base_url`` is the API root (``http://host:port/v1``); ``api_key`` is sent as a Bearer token when
    given. ``refine`` returns ``(caption, error)``: the refined text, or the original and the data error
    (``rejected: ...``, ``unparseable_reply: ...``); it raises :class:`CaptionServiceError` when the
    service itself fails (see the module docstring).
    """

    SYSTEM = ("You rewrite emotion-reasoning annotations of video clips. Keep every fact and the final "
              "emotion label; write fluent English in at most four sentences.")

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0,
                 max_tokens: int = 200, retries: int = 2, backoff_s: float = 1.0) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_tokens = max_tokens
        self.retries, self.backoff_s = retries, backoff_s
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
            text = post_chat(self._client, self.url, body, retries=self.retries, backoff_s=self.backoff_s,
                             what="caption LLM", rejected=_Rejected, failed=CaptionServiceError,
                             bad_reply=_BadReply).strip()
        except _Rejected as exc:
            return caption, f"rejected: {exc}"
        except _BadReply as exc:
            return caption, f"unparseable_reply: {exc}"
        if not text:
            return caption, "unparseable_reply: empty completion"
        return text, None

    def close(self) -> None:
        self._client.close()
