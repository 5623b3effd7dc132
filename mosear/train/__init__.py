"""Training: Ray Train recipe for MoSE / LoRA fine-tuning (``mosear train``).

``run_train(cfg: TrainConfig) -> TrainResult``; see :mod:`mosear.train.recipe` for what the recipe
does and what a checkpoint holds. Importing this package does not import Ray (the step function in
:mod:`mosear.train.step` runs without it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mosear.train.config import TrainConfig

if TYPE_CHECKING:
    from mosear.train.recipe import TrainResult

__all__ = ["TrainConfig", "run_train", "TrainResult"]


def run_train(cfg: TrainConfig) -> "TrainResult":
    from mosear.train.recipe import run_train as _run

    return _run(cfg)


def __getattr__(name: str) -> Any:
    if name == "TrainResult":
        from mosear.train.recipe import TrainResult

        return TrainResult
    raise AttributeError(name)
