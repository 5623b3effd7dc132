"""Training: Ray Train recipe for MoSE / LoRA fine-tuning (``mosear train``).

``run_train(cfg: TrainConfig) -> TrainResult``; see :mod:`mosear.train.recipe` for what the recipe
does and what a checkpoint holds. Names load lazily: importing :mod:`mosear.train.step` (the
optimisation step the GPU benchmark runs without Ray) pulls in neither Ray nor pydantic.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "run_train", "TrainResult"]

_EXPORTS = {"TrainConfig": "mosear.train.config", "run_train": "mosear.train.recipe",
            "TrainResult": "mosear.train.recipe"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mosear.train' has no attribute {name!r}")
