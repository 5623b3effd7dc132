"""Audio evidence: openSMILE eGeMAPS v02 functionals (88 acoustic parameters per clip)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mosear.mine.stage import MiningStage, Resources, audio_absence

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

    def __init__(self, min_seconds: float = 0.3) -> None:
        self.min_seconds = float(min_seconds)
        self._smile = None

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
        feats = self._smile(audio, sr)  # float32[88]
        sample["audio_feats"] = feats
        sample["audio_desc"] = {k: float(feats[self._col[c]]) for k, c in _DESC.items()}
        return sample
