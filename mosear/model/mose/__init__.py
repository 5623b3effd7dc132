"""MoSE as a peft method: config + model + layer + registration (importing this registers it).

peft's :func:`peft.utils.register_peft_method` only accepts names already in its ``PeftType`` enum
(peft's own methods). An outside method is registered the same way into the same four mappings,
keyed by the string ``"MOSE"`` (peft accepts string peft types, see peft PR #2635), so
``get_peft_model(model, MoSEConfig(...))``, ``save_pretrained`` and ``PeftModel.from_pretrained`` work.
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType

from mosear.model.mose.config import MOSE_PEFT_TYPE, MoSEConfig
from mosear.model.mose.layer import Linear, ModalityGate, MoSELayer, MoSEShared
from mosear.model.mose.model import MoSEModel

__all__ = ["MoSEConfig", "MoSEModel", "MoSELayer", "MoSEShared", "Linear", "ModalityGate", "register_mose"]


def register_mose() -> None:
    """Register MoSE with peft (idempotent)."""
    from peft import mapping

    if MOSE_PEFT_TYPE in [t.value for t in PeftType]:  # a peft that ships a MOSE type of its own
        raise RuntimeError("this peft already defines a MOSE method; rename ours before registering")
    if mapping.PEFT_TYPE_TO_CONFIG_MAPPING.get(MOSE_PEFT_TYPE) is MoSEConfig:
        return
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[MOSE_PEFT_TYPE] = MoSEModel.prefix
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[MOSE_PEFT_TYPE] = MoSEConfig
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[MOSE_PEFT_TYPE] = MoSEModel


register_mose()
