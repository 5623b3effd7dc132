"""Visual and audio encoders with projectors into the LLM's embedding space.

Visual: ``F`` frames (uniformly sampled from the clip) → a CLIP-class ViT (frozen) → patch tokens of all
frames ``[B, F·P, D_v]`` → adaptive average pooling along the token axis to ``N_v`` tokens → projector
(Linear-GELU-Linear) → ``[B, N_v, H]``.

Audio: the 16 kHz waveform of each sample (its own length, zero-mean unit-variance normalised as
HuBERT-large expects) → a HuBERT-class encoder (frozen, 50 frames/s) → ``[T_a, D_a]`` → adaptive average
pooling to ``N_a`` tokens → projector → ``[B, N_a, H]``.

``N_v`` and ``N_a`` are configurable so that token imbalance (Emotion-LLaMA: 259 visual vs 1 audio)
can be studied.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MIN_AUDIO_SAMPLES = 8000  # 0.5 s: shorter audio is zero-padded so the conv front end yields frames


def pool_tokens(x: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, n, D]`` by adaptive average pooling along T."""
    return F.adaptive_avg_pool1d(x.transpose(1, 2), n).transpose(1, 2)


def projector(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


def preprocess_frames(frames: np.ndarray, num_frames: int, size: int,
                      mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[num_frames, 3, size, size]`` (uniform frames, resized, normalised)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T > 0, got shape {frames.shape}")
    idx = np.linspace(0, frames.shape[0] - 1, num_frames).round().astype(int)
    x = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


class VisualEncoder(nn.Module):
    """Frozen vision tower + trainable projector. ``pixel_values`` [B, F, 3, S, S] -> [B, N_v, H]."""

    def __init__(self, tower: nn.Module, num_tokens: int, llm_hidden: int) -> None:
        super().__init__()
        self.tower = tower.requires_grad_(False)
        self.num_tokens = num_tokens
        self.projector = projector(tower.config.hidden_size, llm_hidden)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        B, Fr = pixel_values.shape[:2]
        dtype = next(self.tower.parameters()).dtype
        with torch.no_grad():
            feats = self.tower(pixel_values=pixel_values.flatten(0, 1).to(dtype)).last_hidden_state  # [B*F, 1+P, D]
        feats = feats[:, 1:].reshape(B, -1, feats.shape[-1])  # drop CLS: [B, F*P, D]
        feats = pool_tokens(feats.float(), self.num_tokens).to(self.projector[0].weight.dtype)
        return self.projector(feats)  # [B, N_v, H]


class AudioEncoder(nn.Module):
    """Frozen audio tower + trainable projector. ``audio`` [B, N] with ``lengths`` [B] -> [B, N_a, H]."""

    def __init__(self, tower: nn.Module, num_tokens: int, llm_hidden: int) -> None:
        super().__init__()
        self.tower = tower.requires_grad_(False)
        self.num_tokens = num_tokens
        self.projector = projector(tower.config.hidden_size, llm_hidden)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        dtype = next(self.tower.parameters()).dtype
        pooled = []
        for wav, n in zip(audio, lengths.tolist()):  # each clip at its own length: no padding artefacts
            w = wav[: max(int(n), 1)].float()
            if w.numel() < MIN_AUDIO_SAMPLES:
                w = F.pad(w, (0, MIN_AUDIO_SAMPLES - w.numel()))
            w = (w - w.mean()) / (w.std() + 1e-7)
            with torch.no_grad():
                feats = self.tower(input_values=w[None].to(dtype)).last_hidden_state  # [1, T_a, D]
            pooled.append(pool_tokens(feats.float(), self.num_tokens))
        feats = torch.cat(pooled).to(self.projector[0].weight.dtype)  # [B, N_a, D]
        return self.projector(feats)
