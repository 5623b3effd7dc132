"""Visual evidence: BlazeFace on every sampled frame, the ``fer`` expression model on each face crop,
and face-crop features. "No face found" is evidence (``face_found`` false, NaN features), never an error.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from mosear.labels import CANONICAL_LABELS, label_index
from mosear.mine.faces import FER_LABELS, BlazeFaceDetector, FERClassifier
from mosear.mine.stage import MiningStage, Resources

_FER_TO_CANON = np.array([label_index(lbl) for lbl in FER_LABELS])
# Visual feature layout (VISUAL_DIM = 7*3 + 3 + 64 = 88):
#   [0:7]  mean FER scores over frames with a face   [7:14]  max   [14:21] std
#   [21]   fraction of frames with a face            [22]    mean face box side / frame side
#   [23]   mean absolute frame-to-frame change of the face crop (motion, 0-1)
#   [24:88] 8x8 mean-pooled, per-crop standardised grey face (appearance; averaged over frames)
VISUAL_DIM = 88


def fer_to_canonical(scores: np.ndarray) -> np.ndarray:
    """float32[7] FER scores -> float32[11] over CANONICAL_LABELS (classes FER lacks get 0)."""
    out = np.zeros(len(CANONICAL_LABELS), np.float32)
    out[_FER_TO_CANON] = scores
    return out


class FaceExpressionEvidence(MiningStage):
    """Adds ``visual_feats`` (float32[88], layout above; NaN except [21] when no face), ``visual_expr``
    (float32[11] mean expression scores over CANONICAL_LABELS, NaN when no face), ``face_found`` (bool),
    ``face_frames`` (int), ``visual_desc`` (dict for captions: top expression, its score, intensity =
    1 - neutral score, consistency = share of face frames agreeing with the top expression)."""

    name = "visual_fer"
    version = "blazeface-short+fer-quantized"
    resources = Resources(cpus=1)
    adds = ("visual_feats", "visual_expr", "face_found", "face_frames", "visual_desc")
    features = {"visual_feats": "visual"}  # visual_expr's scores are in it already ([0:21])

    def __init__(self, min_score: float = 0.5, min_face_frames: int = 1) -> None:
        self.min_score = float(min_score)
        self.min_face_frames = int(min_face_frames)
        self._det: BlazeFaceDetector | None = None
        self._fer: FERClassifier | None = None

    def setup(self) -> None:
        cv2.setNumThreads(1)  # one worker = one CPU (resources); OpenCV's own pool would oversubscribe
        self._det = BlazeFaceDetector(min_score=self.min_score)
        self._fer = FERClassifier()

    def process(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self._det is None:
            self.setup()
        frames = np.asarray(sample["frames"])
        crops, sides = [], []
        for frame in frames:
            box = self._det.detect(frame)
            if box is None:
                continue
            crops.append(self._fer.crop(frame, box))
            sides.append(max(box.x1 - box.x0, box.y1 - box.y0) / max(frame.shape[:2]))
        feats = np.full(VISUAL_DIM, np.nan, np.float32)
        feats[21] = len(crops) / max(1, len(frames))
        found = len(crops) >= self.min_face_frames
        sample["face_found"] = bool(found)
        sample["face_frames"] = len(crops)
        if not found:
            sample["visual_feats"] = feats
            sample["visual_expr"] = np.full(len(CANONICAL_LABELS), np.nan, np.float32)
            sample["visual_desc"] = {"face": False, "frames": int(len(frames))}
            return sample
        faces = np.stack(crops)
        scores = self._fer.predict(faces)  # [F, 7]
        feats[0:7], feats[7:14], feats[14:21] = scores.mean(0), scores.max(0), scores.std(0)
        feats[22] = float(np.mean(sides))
        f32 = faces.astype(np.float32) / 255.0
        feats[23] = float(np.abs(np.diff(f32, axis=0)).mean()) if len(f32) > 1 else 0.0
        pooled = np.stack([cv2.resize(f, (8, 8), interpolation=cv2.INTER_AREA) for f in f32]).reshape(len(f32), -1)
        pooled = (pooled - pooled.mean(1, keepdims=True)) / (pooled.std(1, keepdims=True) + 1e-6)
        feats[24:88] = pooled.mean(0)
        mean = scores.mean(0)
        top = int(mean.argmax())
        sample["visual_feats"] = feats
        sample["visual_expr"] = fer_to_canonical(mean)
        sample["visual_desc"] = {
            "face": True, "frames": int(len(frames)), "face_frames": len(crops),
            "top": FER_LABELS[top], "top_score": float(mean[top]),
            "intensity": float(1.0 - mean[FER_LABELS.index("neutral")]),
            "consistency": float(np.mean(scores.argmax(1) == top)),
        }
        return sample
