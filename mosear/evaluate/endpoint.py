"""Evaluate a model served behind an OpenAI-compatible chat endpoint (vLLM, llama.cpp, a hosted API).

A checkpoint entry ``endpoint`` (or ``name=endpoint``) in ``mosear eval`` sends every benchmark sample to
``{endpoint.base_url}/chat/completions`` as one user turn with three content parts, built from the shard
sample:

- the frames: ``visual: video`` → one ``video_url`` part (an MPEG-4 clip of the ``num_frames`` uniform
  frames, ``fps`` frames per second, as a ``data:video/mp4;base64`` URL); ``visual: frames`` → one
  ``image_url`` part per frame (JPEG data URLs), for servers that take images only;
- the 16 kHz audio as a WAV file: ``audio: input_audio`` (OpenAI's ``{"type": "input_audio",
  "input_audio": {"data", "format": "wav"}}``) or ``audio: audio_url`` (a ``data:audio/wav`` URL, vLLM);
- the text: "The person in the video says: {transcript}. {instruction}" (the backbone's prompt).

The label is ``parse_label(answer)`` in the benchmark's label space (generation; an endpoint gives no
log-likelihood of arbitrary continuations), the answer is the unit's ``text``. Requests are retried on
connection errors (refused, reset, dropped), timeouts, HTTP 429 and 5xx, ``retries`` times with delays
doubling from ``backoff_s``; other 4xx are not retried. Answers are cached on disk under
``{output}/endpoint_cache/`` by the SHA-256 of the request (URL, model, body with the media), so a
rerun or another unit with the same input never asks twice.

An error is never a result (:mod:`mosear.item_errors`): a request the endpoint refuses *for this sample*
(HTTP 400, 413, 415, 422) or a reply that is not a chat completion is a data error of the item, which gets
``error = "endpoint: ..."`` (counted in the unit's ``errors``, never scored as a wrong label). An endpoint
that cannot be reached, times out, answers 5xx/429 after the retries, or refuses the key or the URL
(401, 403, 404, ...) fails the unit: nothing of it is written, so a rerun with the endpoint back computes
it. The key comes from ``api_key_env`` (``MOSEAR_API_KEY*`` or ``OPENAI_API_KEY``) and is sent only over
https or to a loopback host (:mod:`mosear.secrets`); the URL is stored without credentials.

Not available from an endpoint: attention shares (``share_*`` stay empty), AR (an AR setting's rows
carry ``error = "not available: ..."``) and label log-likelihoods (``scores`` empty); the unit metadata
lists them under ``unavailable`` and the report says so.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import wave
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mosear.atomic import atomic_write_json
from mosear.evaluate.chat import post_chat
from mosear.secrets import ApiKeyEnv, ApiUrl, api_key, redact_url

__all__ = ["ENDPOINT", "EndpointConfig", "EndpointError", "EndpointRejected", "EndpointClient",
           "EndpointPredictor", "UNAVAILABLE", "build_request", "preflight_endpoint"]

log = logging.getLogger(__name__)

ENDPOINT = "endpoint"  # the checkpoint entry that selects the endpoint
UNAVAILABLE = ("attention shares", "AR", "label log-likelihood")


class EndpointConfig(BaseModel):
    """Where the endpoint is and how a sample becomes a request."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    base_url: ApiUrl = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible API base URL (stored and "
                             "shown without credentials)")
    model: str = Field("Qwen/Qwen2.5-Omni-7B", description="model name sent with each request")
    api_key_env: ApiKeyEnv = Field("OPENAI_API_KEY", description="variable holding the API key (may be unset): "
                                   "MOSEAR_API_KEY* or OPENAI_API_KEY; sent only over https or to a loopback host")
    visual: Literal["video", "frames"] = Field("video", description="frames as one video part, or as image parts")
    audio: Literal["input_audio", "audio_url"] = Field("input_audio", description="audio content part style")
    num_frames: int = Field(8, ge=1, description="uniform frames sent per clip")
    fps: float = Field(2.0, gt=0, description="frame rate of the sent video clip")
    max_audio_seconds: float = Field(30.0, gt=0, description="audio beyond this is cut")
    instruction: str | None = Field(None, description="task instruction (None: the model config's default)")
    system_prompt: str | None = Field(None, description="system turn (None: none)")
    max_tokens: int = Field(64, ge=1, description="answer length")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout, seconds")
    retries: int = Field(3, ge=0, description="retries after a failed request (connection errors, 429, 5xx)")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay, seconds (doubles each retry)")
    preflight: bool = Field(True, description="one probe request (a frame + 0.5 s of silence) before any unit")


class EndpointError(RuntimeError):
    """A request failed after its retries (or with a non-retryable status)."""


class EndpointRejected(EndpointError):
    """The endpoint refused this request (HTTP 400, 413, 415, 422: e.g. it does not accept audio parts) or
    sent a reply that is not a chat completion: a data error of the item (see the module docstring)."""


def _wav(audio: np.ndarray) -> bytes:
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _mp4(frames: np.ndarray, fps: float) -> bytes:
    """An MPEG-4 (part 2) clip of uint8 ``[T, H, W, 3]`` frames (even sizes; PyAV, in memory)."""
    import av

    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "3"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def build_request(sample: dict[str, Any], cfg: EndpointConfig, instruction: str) -> dict[str, Any]:
    """The chat-completions body for one shard sample (see the module docstring for the parts)."""
    from mosear.model.prompt import _transcript

    frames = np.asarray(sample["frames"])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T > 0, got shape {frames.shape}")
    if int(sample.get("sample_rate", 16000)) != 16000:
        raise ValueError(f"sample {sample.get('key')}: audio must be 16 kHz, got {sample.get('sample_rate')} Hz")
    idx = np.linspace(0, frames.shape[0] - 1, cfg.num_frames).round().astype(int)
    frames = frames[idx]
    audio = np.asarray(sample["audio"], dtype=np.float32).reshape(-1)[: int(cfg.max_audio_seconds * 16000)]
    wav = _wav(audio)
    if cfg.visual == "video":
        clip = _url("video/mp4", _mp4(frames, cfg.fps))
        parts: list[dict[str, Any]] = [{"type": "video_url", "video_url": {"url": clip}}]
    else:
        parts = [{"type": "image_url", "image_url": {"url": _url("image/jpeg", _jpeg(f))}} for f in frames]
    if cfg.audio == "input_audio":
        parts.append({"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}})
    else:
        parts.append({"type": "audio_url", "audio_url": {"url": _url("audio/wav", wav)}})
    parts.append({"type": "text", "text": f"The person in the video says: {_transcript(sample)}. {instruction}"})
    messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else [])
    messages.append({"role": "user", "content": parts})
    return {"model": cfg.model, "messages": messages, "temperature": 0, "max_tokens": cfg.max_tokens}


class EndpointClient:
    """POSTs chat completions with retries, timeouts and a disk cache keyed by the request's content."""

    def __init__(self, cfg: EndpointConfig, cache_dir: str | Path | None = None) -> None:
        import httpx

        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.cache_dir = Path(cache_dir) if cache_dir else None
        headers = {"Content-Type": "application/json"}
        key = api_key(cfg.api_key_env, self.url, "endpoint.api_key_env")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=cfg.timeout_s, headers=headers)
        self.requests = 0  # HTTP requests sent (retries included), cache hits excluded

    def close(self) -> None:
        self._client.close()

    def _cache_file(self, body: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps([self.url, body], sort_keys=True).encode()).hexdigest()
        return self.cache_dir / f"{digest[:32]}.json"

    def complete(self, body: dict[str, Any]) -> str:
        """The answer text of one request; :class:`EndpointRejected` / :class:`EndpointError` on failure."""
        disk = self._cache_file(body)
        if disk is not None and disk.is_file():
            return json.loads(disk.read_text())["answer"]
        answer = post_chat(self._client, self.url, body, retries=self.cfg.retries, backoff_s=self.cfg.backoff_s,
                           what="endpoint", rejected=EndpointRejected, failed=EndpointError,
                           on_attempt=self._count_request, bad_reply=EndpointRejected)
        if disk is not None:
            atomic_write_json(disk, {"model": self.cfg.model, "answer": answer})
        return answer

    def _count_request(self) -> None:
        self.requests += 1


def _instruction(cfg: EndpointConfig) -> str:
    from mosear.model.config import EMOTION_LLAMA_INSTRUCTION

    return cfg.instruction or EMOTION_LLAMA_INSTRUCTION


def preflight_endpoint(cfg: EndpointConfig) -> None:
    """One probe request before any unit runs: a black frame and 0.5 s of silence in this config's
    content-part style. Raises :class:`EndpointRejected` (e.g. the server takes no audio parts) or
    :class:`EndpointError` (unreachable) with the server's reason."""
    probe = {"key": "preflight", "frames": np.zeros((1, 32, 32, 3), np.uint8), "audio": np.zeros(8000, np.float32),
             "sample_rate": 16000, "meta": {"transcript": None}}
    body = build_request(probe, cfg.model_copy(update={"num_frames": 1}), _instruction(cfg))
    body["max_tokens"] = 1
    client = EndpointClient(cfg)
    try:
        client.complete(body)
    except EndpointRejected as exc:
        raise EndpointRejected(f"{exc} (probe with one {cfg.visual} part and one {cfg.audio} part: does the "
                               f"server accept {cfg.audio} audio content? try endpoint.audio / "
                               f"endpoint.visual)") from None
    finally:
        client.close()


class _NoLocalModel:
    """Stands where the runner reads a local model's config: media inputs, the default AR fields."""

    def __init__(self) -> None:
        from mosear.model.config import ModelConfig

        self.cfg = ModelConfig()


class EndpointPredictor:
    """The runner's predictor for endpoint units: ``predict(samples) -> rows`` (one request per sample)."""

    device = "endpoint"

    def __init__(self, cfg: Any, unit: Any, bench: Any) -> None:
        from mosear.model import parse_label

        if cfg.endpoint is None:
            raise ValueError("checkpoint 'endpoint' needs an endpoint: section in the eval config")
        self.cfg, self.unit, self.bench = cfg, unit, bench
        self.ecfg: EndpointConfig = cfg.endpoint
        self.client = EndpointClient(self.ecfg, cache_dir=Path(cfg.output) / "endpoint_cache")
        self.parse_label = parse_label
        self.instruction = _instruction(self.ecfg)
        self.unsupported = "not available: endpoint models cannot apply AR" if unit.setting.ar else None
        self.setting = unit.setting  # what the runner records (no AR calibration for an endpoint)
        self.calibration = None
        self.model = _NoLocalModel()
        self.failures = 0

    def predict(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        labels = tuple(self.bench.labels)
        rows = []
        for s in samples:
            if self.unsupported:
                rows.append({"error": self.unsupported})
                continue
            try:
                text = self.client.complete(build_request(s, self.ecfg, self.instruction))
            except EndpointRejected as exc:  # this sample's request or reply: a data error of the item
                self.failures += 1
                rows.append({"error": f"endpoint: {exc}"[:1000]})
                continue
            # any other EndpointError (unreachable, 5xx, 401/403) propagates: the unit fails, nothing cached
            parsed = self.parse_label(text, labels)
            rows.append({"text": text, "parsed_label": parsed, "pred_label": parsed, "scores": None,
                         "share_audio": None, "share_visual": None, "share_text": None})
        return rows

    def metadata(self) -> dict[str, Any]:
        return {"backend": "endpoint", "endpoint": redact_url(self.client.url), "endpoint_model": self.ecfg.model,
                "unavailable": list(UNAVAILABLE), "endpoint_failures": self.failures,
                "endpoint_requests": self.client.requests}


def report_notes(results_dir: str | Path) -> list[str]:
    """One line per checkpoint whose units say some metrics are not available (endpoint units), for the
    report: ``"endpoint (model at url): not available: attention shares, AR, label log-likelihood"``."""
    import pyarrow.parquet as pq

    root = Path(results_dir)
    listed = root / "units.json"
    if listed.is_file():
        names = json.loads(listed.read_text())["units"]
    else:
        names = [p.name for p in (root / "units").glob("*.parquet")]
    notes: dict[str, str] = {}
    for name in names:
        path = root / "units" / name
        if not path.is_file():
            continue
        meta = json.loads((pq.read_schema(path).metadata or {}).get(b"mosear.unit", b"{}"))
        if meta.get("unavailable") and meta.get("checkpoint") not in notes:
            where = f" ({meta.get('endpoint_model')} at {meta.get('endpoint')})" if meta.get("endpoint") else ""
            notes[meta["checkpoint"]] = f"{meta['checkpoint']}{where}: not available: {', '.join(meta['unavailable'])}"
    return list(notes.values())
