"""Prompt builder: interleaves media placeholders and text, and records a modality id per position.

Layout of one sample (Emotion-LLaMA style; ``V`` = visual token, ``A`` = audio token)::

    <s>[INST] Video: V…V (N_v) Audio: A…A (N_a) The person in the video says: {transcript}. {instruction} [/INST]
    then, for training, " {target}</s>"   (target = label + reasoning; only these positions carry labels)

Batches are LEFT-padded (modality id ``PAD``, attention mask 0) so every prompt ends at the last
position: training, scoring and ``generate()`` see the same layout, and positions are
``cumsum(attention_mask) - 1`` (what ``generate()`` computes), so padding never shifts a sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mosear.model.encoders import preprocess_frames
from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL

IGNORE = -100


def _transcript(sample: dict[str, Any]) -> str:
    text = sample.get("transcript")
    if text is None:
        text = (sample.get("meta") or {}).get("transcript")
    text = " ".join(str(text).split()) if text else ""
    return text or "(no transcript)"


class PromptBuilder:
    """Turns reader-style samples into a batch (see :meth:`collate`)."""

    def __init__(self, tokenizer: Any, *, visual_tokens: int, audio_tokens: int, num_frames: int, image_size: int,
                 image_mean: tuple[float, ...], image_std: tuple[float, ...], instruction: str,
                 max_text_tokens: int, max_target_tokens: int, max_audio_samples: int,
                 inputs: str = "media", feature_dims: tuple[int, int] = (0, 0)) -> None:
        self.tok = tokenizer
        self.inputs = inputs
        self.feature_dims = feature_dims  # (visual D, audio D) when inputs == "features"
        self.visual_tokens = visual_tokens
        self.audio_tokens = audio_tokens
        self.num_frames = num_frames
        self.image_size = image_size
        self.image_mean, self.image_std = image_mean, image_std
        self.instruction = instruction
        self.max_text_tokens = max_text_tokens
        self.max_target_tokens = max_target_tokens
        self.max_audio_samples = max_audio_samples
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def prompt_layout(self, transcript: str) -> tuple[list[int], list[int]]:
        """Token ids (media positions hold ``pad_id``) and modality ids of one prompt."""
        said = self._ids(f" The person in the video says: ")[:]
        said += self._ids(transcript)[: self.max_text_tokens]
        pieces: list[tuple[int, list[int]]] = [
            (TEXT, [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []),
            (TEXT, self._ids("[INST] Video:")),
            (VISUAL, [self.pad_id] * self.visual_tokens),
            (TEXT, self._ids(" Audio:")),
            (AUDIO, [self.pad_id] * self.audio_tokens),
            (TEXT, said + self._ids(f". {self.instruction} [/INST]")),
        ]
        ids: list[int] = []
        mods: list[int] = []
        for m, toks in pieces:
            ids += toks
            mods += [m] * len(toks)
        return ids, mods

    def target_ids(self, target: str) -> list[int]:
        ids = self._ids(" " + " ".join(target.split()))[: self.max_target_tokens]
        return ids + ([self.tok.eos_token_id] if self.tok.eos_token_id is not None else [])

    def collate(self, samples: list[dict[str, Any]], include_target: bool = True) -> dict[str, torch.Tensor]:
        """Samples ``{"frames": uint8[T,H,W,3], "audio": float32[N] (16 kHz), "meta": {...}, "target"?: str}``
        -> batch of tensors:

        - ``input_ids`` [B, L] (media and padding positions hold the pad id), ``attention_mask`` [B, L],
          ``modality_ids`` [B, L] (``PAD``/``TEXT``/``VISUAL``/``AUDIO``), ``labels`` [B, L] (-100 outside
          targets; only when some sample has a ``target`` and ``include_target``);
        - ``pixel_values`` [B, F, 3, S, S] float32, ``audio_values`` [B, N_max] float32, ``audio_lengths`` [B];
          or, with ``inputs="features"``, ``visual_features`` [B, N_v, D_v] and ``audio_features`` [B, N_a, D_a]
          float32 from each sample's ``"features"`` (``{"visual": array, "audio": array}``, pooled to the
          token counts; NaN = missing evidence).
        """
        if not samples:
            raise ValueError("collate needs at least one sample")
        rows, mods, labs = [], [], []
        has_target = include_target and any(s.get("target") for s in samples)
        for s in samples:
            ids, m = self.prompt_layout(_transcript(s))
            lab = [IGNORE] * len(ids)
            if has_target and s.get("target"):
                t = self.target_ids(str(s["target"]))
                ids, m, lab = ids + t, m + [TEXT] * len(t), lab + t
            rows.append(ids)
            mods.append(m)
            labs.append(lab)
        L = max(len(r) for r in rows)
        B = len(rows)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        modality = torch.full((B, L), PAD, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        labels = torch.full((B, L), IGNORE, dtype=torch.long)
        for i, (r, m, lab) in enumerate(zip(rows, mods, labs)):
            n = len(r)
            input_ids[i, L - n:] = torch.tensor(r)
            modality[i, L - n:] = torch.tensor(m)
            attn[i, L - n:] = 1
            labels[i, L - n:] = torch.tensor(lab)
        batch = {"input_ids": input_ids, "attention_mask": attn, "modality_ids": modality}
        if self.inputs == "features":
            batch.update(self._features(samples))
        else:
            batch["pixel_values"] = torch.stack([
                preprocess_frames(s["frames"], self.num_frames, self.image_size, self.image_mean, self.image_std)
                for s in samples
            ])
            batch["audio_values"], batch["audio_lengths"] = self._audio(samples)
        if has_target:
            batch["labels"] = labels
        return batch

    def _features(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from mosear.model.features import pool_vectors

        vis, aud = [], []
        for s in samples:
            f = s.get("features")
            if f is None:
                raise ValueError(f"sample {s.get('key')}: no precomputed features (model.inputs=features needs its "
                                 "key in the feature table, e.g. mined/features.parquet)")
            vis.append(pool_vectors(f.get("visual"), self.visual_tokens, self.feature_dims[0]))
            aud.append(pool_vectors(f.get("audio"), self.audio_tokens, self.feature_dims[1]))
        return {"visual_features": torch.from_numpy(np.stack(vis)), "audio_features": torch.from_numpy(np.stack(aud))}

    def _audio(self, samples: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        waves = []
        for s in samples:
            sr = int(s.get("sample_rate", 16000))
            if sr != 16000:
                raise ValueError(f"sample {s.get('key')}: audio must be 16 kHz, got {sr} Hz")
            w = np.asarray(s["audio"], dtype=np.float32).reshape(-1)[: self.max_audio_samples]
            waves.append(torch.from_numpy(w.copy()))
        n = max(1, max(w.numel() for w in waves))
        audio = torch.zeros(len(waves), n)
        for i, w in enumerate(waves):
            audio[i, : w.numel()] = w
        return audio, torch.tensor([w.numel() for w in waves], dtype=torch.long)
