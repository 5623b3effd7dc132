"""Model-backed evidence for clusters: any transformers audio or image classification model.

The model loads from a local directory (``save_pretrained`` layout; model hubs are never contacted) once
per worker, on the GPU when the stage is given one. Its ``id2label`` names are mapped into the canonical
label space with :func:`mosear.labels.canonical_label`; classes without a canonical name are left out and
the rest renormalised. For images, ``num_frames`` frames are classified and their probabilities averaged.

Audio is fed at the model's own sampling rate (the feature extractor's ``sampling_rate``; the sample's
``sample_rate`` is resampled to it, polyphase), one clip per forward call, so a clip's probabilities
never depend on the clips batched with it (padding) and are the same whatever the batch size. A clip
without audio evidence (no audio stream, empty, silent: :func:`~mosear.mine.stage.audio_absence`) is not
scored: NaN probabilities and the reason in ``{output_field}_missing``.

Determinism: on CPU the forward pass is deterministic for a given torch build; on a GPU, cuDNN is put
in deterministic mode with its autotuner off, and what remains (kernel choice across GPU models and
library versions) is below 1e-5 in probability here (tests/mine/test_hf_gpu.py compares CPU and GPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mosear.labels import CANONICAL_LABELS, canonical_label, label_index
from mosear.mine.stage import MiningStage, Resources, audio_absence


class HFClassifierEvidence(MiningStage):
    """Adds ``output_field`` (default ``hf_<modality>_probs``): float32[11] over CANONICAL_LABELS (NaN: not
    scored), and ``{output_field}_missing``: why a clip was not scored (``no_audio_stream``, ``empty``,
    ``silent``, ``no_frames``), None when it was.

    ``output_field`` is a feature of ``modality``: the probabilities are an input of that modality's
    cross-fitted classifier.

    Parameters: ``model_path`` (local folder), ``modality`` (``audio`` | ``visual``), ``gpus`` (the
    worker's GPU share; 0 runs on CPU), ``num_frames`` (visual), ``batch_size``, ``output_field``,
    ``name`` (to run two of them, audio and visual, in one pipeline).

    The class attributes below are the declarations for the defaults (``modality: audio``); because the
    output field, modality, name and GPU share are parameters, ``__init__`` sets the declarations of each
    instance from them (the pipeline reads declarations from instances; ``docs/mining.md``).
    """

    name = "hf_classifier"
    version = "transformers"
    adds = ("hf_audio_probs", "hf_audio_probs_missing")
    features = {"hf_audio_probs": "audio"}

    def __init__(self, model_path: str, modality: str = "audio", gpus: float = 0.0, num_frames: int = 4,
                 batch_size: int = 8, output_field: str | None = None, name: str | None = None) -> None:
        if modality not in ("audio", "visual"):
            raise ValueError(f"hf_classifier: modality must be 'audio' or 'visual', got {modality!r}")
        self.model_path = str(model_path)
        self.modality = modality
        self.num_frames = int(num_frames)
        self.batch_size = int(batch_size)
        self.resources = Resources(cpus=1, gpus=float(gpus))
        self.output_field = output_field or f"hf_{modality}_probs"
        self.adds = (self.output_field, f"{self.output_field}_missing")
        self.features = {self.output_field: modality}
        if name:
            self.name = name
        self._model = None

    def setup(self) -> None:
        import torch
        from transformers import (AutoFeatureExtractor, AutoImageProcessor,
                                  AutoModelForAudioClassification, AutoModelForImageClassification)

        self._torch = torch
        self.device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        if self.device == "cuda":  # same clip, same probabilities: no autotuned (timing-chosen) kernels
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        if self.modality == "audio":
            self._proc = AutoFeatureExtractor.from_pretrained(self.model_path, local_files_only=True)
            self._rate = int(getattr(self._proc, "sampling_rate", 16000) or 16000)
            model = AutoModelForAudioClassification.from_pretrained(self.model_path, local_files_only=True)
        else:
            self._proc = AutoImageProcessor.from_pretrained(self.model_path, local_files_only=True)
            model = AutoModelForImageClassification.from_pretrained(self.model_path, local_files_only=True)
        self._model = model.eval().to(self.device)
        # Model class index -> canonical index (or -1 when the class has no canonical name).
        id2label = model.config.id2label
        self._map = np.array([
            label_index(c) if (c := canonical_label(id2label[i])) else -1 for i in range(len(id2label))
        ])
        if (self._map < 0).all():
            raise ValueError(f"{self.model_path}: none of the labels {list(id2label.values())} is an emotion "
                             f"in the canonical space {list(CANONICAL_LABELS)}")

    def _to_canonical(self, probs: np.ndarray) -> np.ndarray:
        out = np.zeros((probs.shape[0], len(CANONICAL_LABELS)), np.float32)
        for j, c in enumerate(self._map):
            if c >= 0:
                out[:, c] += probs[:, j]
        return out / np.clip(out.sum(1, keepdims=True), 1e-9, None)

    def _waveform(self, sample: dict[str, Any]) -> np.ndarray:
        """The sample's audio at the model's sampling rate, float32 [N]."""
        audio = np.asarray(sample["audio"], np.float32)
        rate = int(sample.get("sample_rate") or 16000)
        if rate != self._rate:
            from math import gcd

            from scipy.signal import resample_poly

            g = gcd(rate, self._rate)
            audio = resample_poly(audio, self._rate // g, rate // g).astype(np.float32)
        return audio

    def _forward(self, inputs: dict[str, Any]) -> np.ndarray:
        logits = self._model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
        return self._torch.softmax(logits.float(), -1).cpu().numpy()

    def process_batch(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._model is None:
            self.setup()
        nan = np.full(len(CANONICAL_LABELS), np.nan, np.float32)
        with self._torch.inference_mode():
            for s in samples:
                if self.modality == "audio":
                    missing = audio_absence(s)
                    if missing is None:
                        inputs = self._proc([self._waveform(s)], sampling_rate=self._rate, return_tensors="pt")
                        probs = self._forward(inputs)[0]
                else:
                    frames = np.asarray(s["frames"])
                    missing = "no_frames" if len(frames) == 0 else None
                    if missing is None:
                        idx = np.linspace(0, len(frames) - 1, min(self.num_frames, len(frames))).round().astype(int)
                        probs = self._forward(self._proc(images=list(frames[idx]), return_tensors="pt")).mean(0)
                s[self.output_field] = nan.copy() if missing else self._to_canonical(probs[None])[0]
                s[f"{self.output_field}_missing"] = missing
        return samples
