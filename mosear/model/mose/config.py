"""Configuration of MoSE (mixture of modality-specific LoRA experts), a peft method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig

MOSE_PEFT_TYPE = "MOSE"
# how the modality weights are set (see MoSEConfig.weight_rule)
WEIGHT_RULES = ("update", "ogm", "attention")


@dataclass
class MoSEConfig(PeftConfig):
    """MoSE adapter settings (see :mod:`mosear.model.mose.layer` for the formulas).

    ``num_experts=1``, ``share_experts=True``, ``gate="none"``, ``dynamic_weights=False`` reduce MoSE to
    plain LoRA with the same ``r``, ``lora_alpha``, ``lora_dropout`` (tested bit for bit).
    """

    r: int = field(default=64, metadata={"help": "rank of the shared A and of every expert B"})
    lora_alpha: float = field(default=16.0, metadata={"help": "scaling numerator: update scaled by lora_alpha / r"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the adapter input"})
    target_modules: Optional[Union[list[str], str]] = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "module names (or a regex) of nn.Linear layers to adapt"},
    )
    num_experts: int = field(default=4, metadata={"help": "K: expert B matrices per modality"})
    share_experts: bool = field(
        default=False,
        metadata={"help": "one set of K experts shared by all modalities (gates stay per modality)"},
    )
    gate: str = field(default="softmax", metadata={"help": "'softmax' (learned gate) or 'none' (uniform 1/K)"})
    gate_temperature: float = field(default=1.0, metadata={"help": "tau in softmax(logits / tau)"})
    top_k: Optional[int] = field(default=None, metadata={"help": "keep the k largest gate weights, renormalised"})
    balance_loss_weight: float = field(
        default=0.01, metadata={"help": "lambda of the load-balancing regulariser added to the LM loss"}
    )
    dynamic_weights: bool = field(
        default=True, metadata={"help": "rescale audio/visual updates from their measured contribution"}
    )
    weight_rule: str = field(
        default="update",
        metadata={"help": "'update' (w from the update's relative size; scales forward and gradient), 'ogm' "
                          "(unimodal confidence, OGM style) or 'attention' (attention share per token); the "
                          "reliance rules ('ogm', 'attention') scale gradients only, set by the caller "
                          "through MoSEModel.set_modality_weights (see mosear.model.mose.reliance)"},
    )
    expert_init_std: float = field(
        default=0.0,
        metadata={"help": "std of the centred random start of the expert B's (0: all zero); centred over the K "
                          "experts of a modality, so with a uniform gate the update still starts at 0"},
    )
    gate_init_std: float = field(default=0.0, metadata={"help": "std of the gates' random start (0: uniform gate)"})
    weight_momentum: float = field(default=0.9, metadata={"help": "EMA momentum of the measured contribution"})
    weight_strength: float = field(default=0.5, metadata={"help": "gamma: w_m = (c_mean / c_m) ** gamma"})
    weight_min: float = field(default=0.5, metadata={"help": "lower clip of a modality weight"})
    weight_max: float = field(default=2.0, metadata={"help": "upper clip of a modality weight"})
    init_weights: bool = field(default=True, metadata={"help": "B = 0 at init (adapter starts as identity)"})
    bias: str = field(default="none", metadata={"help": "only 'none' is supported"})
    modules_to_save: Optional[list[str]] = field(default=None, metadata={"help": "extra trainable modules"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = MOSE_PEFT_TYPE
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if self.r <= 0:
            raise ValueError(f"r must be positive, got {self.r}")
        if self.num_experts <= 0:
            raise ValueError(f"num_experts must be positive, got {self.num_experts}")
        if self.gate not in ("softmax", "none"):
            raise ValueError(f"gate must be 'softmax' or 'none', got {self.gate!r}")
        if self.gate_temperature <= 0:
            raise ValueError(f"gate_temperature must be > 0, got {self.gate_temperature}")
        if self.top_k is not None and not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        if self.weight_rule not in WEIGHT_RULES:
            raise ValueError(f"weight_rule must be one of {WEIGHT_RULES}, got {self.weight_rule!r}")
        if self.expert_init_std < 0 or self.gate_init_std < 0:
            raise ValueError("expert_init_std and gate_init_std must be >= 0")
        if not 0.0 <= self.weight_momentum < 1.0:
            raise ValueError(f"weight_momentum must be in [0, 1), got {self.weight_momentum}")
        if not 0 < self.weight_min <= 1.0 <= self.weight_max:
            raise ValueError("need 0 < weight_min <= 1 <= weight_max")
        if self.bias != "none":
            raise ValueError("MoSE supports bias='none' only")
