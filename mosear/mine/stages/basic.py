"""Small built-in stages: label requirement and signal quality (silent audio, black frames)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mosear.mine.stage import Drop, FilterStage, MiningStage


class RequireLabelFilter(FilterStage):
    """Drop samples without a canonical label: mining compares cues with the true label. A spliced
    clip has no true label by design (``extra.origin: spliced``); it is kept when it names both of its
    cues (``face_label``, ``voice_label``)."""

    name = "require_label"
    version = "2"
    drop_reasons = ("no_label",)

    def keep(self, sample: dict[str, Any]) -> bool | tuple[bool, str]:
        meta = sample.get("meta", {})
        extra = meta.get("extra") or {}
        if extra.get("origin") == "spliced":
            return True if extra.get("face_label") and extra.get("voice_label") else (False, "no_label")
        return True if meta.get("label") else (False, "no_label")


class SignalQualityStage(MiningStage):
    """Measure audio level and frame brightness; flag silent audio and black video as evidence.

    Adds ``audio_rms_dbfs`` (float, dBFS of the whole waveform; -inf for empty audio), ``audio_silent``
    (bool: RMS below ``silence_dbfs`` or ``meta.has_audio`` false), ``frames_luma`` (mean luma 0-255)
    and ``frames_black`` (bool: mean luma below ``black_luma``). Drops only samples with neither audio
    samples nor frames (``empty_media``) and samples missing a member of the shard contract
    (``missing_member``: a damaged shard; the detail names the member).
    """

    name = "signal_quality"
    adds = ("audio_rms_dbfs", "audio_silent", "frames_luma", "frames_black")
    drop_reasons = ("empty_media", "missing_member")

    def __init__(self, silence_dbfs: float = -60.0, black_luma: float = 8.0) -> None:
        self.silence_dbfs = float(silence_dbfs)
        self.black_luma = float(black_luma)

    def process(self, sample: dict[str, Any]) -> dict[str, Any] | Drop:
        missing = [m for f, m in (("frames", "frames.npy"), ("audio", "wav"), ("meta", "json")) if f not in sample]
        if missing:
            return Drop("missing_member", f"sample has no {', '.join(missing)} member")
        audio = np.asarray(sample.get("audio", np.zeros(0, np.float32)), dtype=np.float32)
        frames = np.asarray(sample.get("frames", np.zeros((0, 1, 1, 3), np.uint8)))
        if audio.size == 0 and frames.size == 0:
            return Drop("empty_media", "no audio samples and no frames")
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
        dbfs = 20.0 * np.log10(rms) if rms > 0 else float("-inf")
        has_audio = sample.get("meta", {}).get("has_audio", True)
        luma = float(frames.mean()) if frames.size else 0.0
        sample["audio_rms_dbfs"] = dbfs
        sample["audio_silent"] = bool(dbfs < self.silence_dbfs or has_audio is False)
        sample["frames_luma"] = luma
        sample["frames_black"] = bool(luma < self.black_luma)
        return sample
