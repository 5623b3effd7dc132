"""Fixtures for the model tests: real clips from datasets/samples decoded once, tiny models on demand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

RAVDESS_EMOTION = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear",
                   "07": "disgust", "08": "surprise"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


@pytest.fixture(scope="session")
def real_samples(samples_dir):
    """Reader-style samples from three real RAVDESS clips (8 frames at 64x64, 16 kHz audio)."""
    from mosear.media.decode import decode_clip

    clips = sorted((samples_dir / "ravdess").glob("01-*.mp4"))[:3]
    if len(clips) < 3:
        pytest.skip("need 3 RAVDESS clips in datasets/samples/ravdess")
    out = []
    for p in clips:
        c = decode_clip(p, num_frames=8, height=64, width=64)
        code = p.stem.split("-")
        out.append({
            "key": f"ravdess__{p.stem.replace('-', '_')}",
            "frames": c.frames,
            "audio": (c.audio.astype(np.float32) / 32768.0),
            "sample_rate": c.sample_rate,
            "meta": {"label": RAVDESS_EMOTION[code[2]], "transcript": STATEMENTS[code[4]]},
        })
    out[1]["meta"]["transcript"] = None  # one clip without transcript: a shorter prompt
    return out


@pytest.fixture
def make_model():
    """Build a tiny model with overrides (small rank for speed)."""
    from mosear.config import load_config
    from mosear.model import ModelConfig, build_model

    def make(**overrides):
        overrides.setdefault("lora", {"r": 8, "alpha": 16.0, "dropout": 0.0})
        cfg = load_config(ModelConfig, overrides=overrides)
        model = build_model(cfg)
        model.eval()
        return model

    return make


@pytest.fixture
def nonzero_adapter():
    return _nonzero_adapter


def _nonzero_adapter(model, seed: int = 1, scale: float = 0.3) -> None:
    """Give every adapter B (and gate) random non-zero values so the adapter changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "mose_B" in name or "lora_B" in name or "mose_gate" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
