"""Model-backed evidence for clusters: any transformers audio or image classification model.

The model loads from a local directory (``save_pretrained`` layout; model hubs are never contacted) once
per worker, on the GPU when the stage is given one. Its ``id2label`` names are mapped into the canonical
label space with :func:`mosear.labels.canonical_label`; classes without a canonical name are left out and
the rest renormalised. For images, ``num_frames`` frames are classified and their probabilities averaged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mosear.labels import CANONICAL_LABELS, canonical_label, label_index
from mosear.mine.stage import MiningStage, Resources


class HFClassifierEvidence(MiningStage):
    """Adds ``output_field`` (default ``hf_<modality>_probs``): float32[11] over CANONICAL_LABELS.

    Parameters: ``model_path`` (local folder), ``modality`` (``audio`` | ``visual``), ``gpus`` (the
    worker's GPU share; 0 runs on CPU), ``num_frames`` (visual), ``batch_size``.
    """

    name = "hf_classifier"
    version = "transformers"
    adds = ("hf_probs",)

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
        self.adds = (self.output_field,)
        if name:
            self.name = name
        self._model = None

    def setup(self) -> None:
        import torch
        from transformers import (AutoFeatureExtractor, AutoImageProcessor,
                                  AutoModelForAudioClassification, AutoModelForImageClassification)

        self._torch = torch
        self.device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        if self.modality == "audio":
            self._proc = AutoFeatureExtractor.from_pretrained(self.model_path, local_files_only=True)
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

    def process_batch(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._model is None:
            self.setup()
        torch = self._torch
        with torch.inference_mode():
            if self.modality == "audio":
                waves = [np.asarray(s["audio"], np.float32) if len(s["audio"]) else np.zeros(1600, np.float32)
                         for s in samples]
                inputs = self._proc(waves, sampling_rate=16000, return_tensors="pt", padding=True)
                logits = self._model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
                probs = torch.softmax(logits.float(), -1).cpu().numpy()
            else:
                per = []
                for s in samples:
                    frames = np.asarray(s["frames"])
                    idx = np.linspace(0, len(frames) - 1, min(self.num_frames, len(frames))).round().astype(int)
                    inputs = self._proc(images=list(frames[idx]), return_tensors="pt")
                    logits = self._model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
                    per.append(torch.softmax(logits.float(), -1).mean(0).cpu().numpy())
                probs = np.stack(per)
        for s, p in zip(samples, self._to_canonical(probs)):
            s[self.output_field] = p
        return samples
