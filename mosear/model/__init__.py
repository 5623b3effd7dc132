"""The MoSEAR model: multimodal backbone, MoSE experts (a peft method) and AR attention.

Names are loaded lazily so that the peft method and the attention function
(``mosear.model.mose``, ``mosear.model.ar``) import with only torch / transformers / peft.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "mosear.model.config",
    "ARSettings": "mosear.model.config",
    "MoSEARModel": "mosear.model.mosear_model",
    "build_model": "mosear.model.mosear_model",
    "parse_label": "mosear.model.outputs",
    "set_attention_mode": "mosear.model.ar",
    "AttentionReallocator": "mosear.model.ar",
    "calibrate_ar": "mosear.model.calibrate",
    "MoSEConfig": "mosear.model.mose",
    "MoSEModel": "mosear.model.mose",
    "ModalityContext": "mosear.model.modality",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mosear.model' has no attribute {name!r}")
