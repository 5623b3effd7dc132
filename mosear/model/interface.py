"""What both model backends share (:class:`~mosear.model.mosear_model.MoSEARModel` and
:class:`~mosear.model.hf_av.AVModel`): the forward's output, the adapter access the train step and the
metrics use, the adapter-folder check, dtype names and the seeded build. Importing it pulls in neither
backend, so neither imports the other's module for these (no import cycle).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from mosear.model.config import ModelConfig
from mosear.model.modality import ModalityContext
from mosear.model.mose import MoSEModel

__all__ = ["DTYPES", "MoSEAROutput", "AdapterAccess", "model_output", "check_adapter_folder", "seeded"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# AR / attention settings and label scoring are inference-time and may differ between a saved adapter and the model.
_CONFIG_FIELDS_FREE = {"ar", "max_text_tokens", "max_target_tokens", "instruction", "label_scoring"}


def check_adapter_folder(directory: str | Path, cfg: ModelConfig, peft: bool) -> Path:
    """The checks every ``load_adapter`` makes before reading weights; returns the folder as a Path.

    Refuses a folder without ``model_config.json`` (not a mosear adapter), one saved for another model
    config (fields outside :data:`_CONFIG_FIELDS_FREE` differ: named in the error) and, when the model
    carries a peft adapter (``peft``), one without ``adapter/adapter_config.json``.
    """
    d = Path(directory)
    cfg_file = d / "model_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{d} holds no model_config.json: not a mosear adapter folder")
    saved = ModelConfig.model_validate(json.loads(cfg_file.read_text()))
    diff = [k for k in ModelConfig.model_fields if k not in _CONFIG_FIELDS_FREE and getattr(saved, k) != getattr(cfg, k)]
    if diff:
        raise ValueError(f"adapter in {d} was saved for another model config; differing fields: {diff}")
    if peft and not (d / "adapter" / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{d / 'adapter'} holds no peft adapter")
    return d


@dataclass
class MoSEAROutput:
    """``loss`` = LM loss + lambda * balance loss (None without labels); ``logits`` [B, L, V]; ``aux``: detached
    0-d tensors (``lm_loss``, ``balance_loss``) or floats, reduced by the train step."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    lm_loss: torch.Tensor | None = None
    balance_loss: torch.Tensor | None = None
    aux: dict[str, torch.Tensor | float] = field(default_factory=dict)


class AdapterAccess:
    """What the train step and the metrics read from a model's adapter, shared by :class:`MoSEARModel`
    and :class:`~mosear.model.hf_av.AVModel` (both hold the peft model as ``self.lm`` and a fallback
    ``self._own_context``).

    Nothing here changes state but :meth:`update_modality_weights`, :meth:`measure_reliance` and
    :meth:`apply_gradient_noise`, the calls the train step makes (after each backward / every
    ``mose.reliance_every`` steps / before clipping).
    """

    lm: nn.Module
    cfg: ModelConfig
    _own_context: ModalityContext

    @property
    def mose(self) -> MoSEModel | None:
        """The MoSE tuner (None with LoRA or no adapter)."""
        tuner = getattr(self.lm, "base_model", None)
        return tuner if isinstance(tuner, MoSEModel) else None

    @property
    def modality_context(self) -> ModalityContext:
        """The context MoSE layers read (the peft tuner's when MoSE is on, else the model's own)."""
        tuner = self.mose
        return tuner.modality_context if tuner is not None else self._own_context

    @property
    def label_scoring(self) -> str:
        """How ``score_labels`` reduces a label's token log-probabilities, ``"sum"`` or ``"mean"``
        (``ModelConfig.label_scoring``); the eval runner records it with each unit."""
        return self.cfg.label_scoring

    @property
    def reliance_every(self) -> int | None:
        """``k`` when the modality weights come from a reliance rule measured every k steps, else None."""
        if self.mose is None or not self.cfg.mose.uses_reliance:
            return None
        return self.cfg.mose.reliance_every

    def update_modality_weights(self) -> int:
        """Apply the MoSE layers' queued weight measurements (update-size rule); 0 without MoSE. No host sync."""
        return self.mose.update_modality_weights() if self.mose is not None else 0

    def modality_gradients(self) -> dict[int, list[torch.Tensor]]:
        """Gradients of the trainable parameters outside the MoSE layers that carry one modality into the
        LM (its projector), ``{modality: [grad, ...]}``; none here (a backend with such projectors says)."""
        return {}

    def apply_gradient_noise(self, seed: int | None = None, generator: torch.Generator | None = None) -> bool:
        """OGM-GE's noise (``mose.ge_noise``) on this step's gradients, after the backward and before
        clipping (:meth:`MoSEModel.add_ge_noise`; the projectors too when ``mose.scale_projectors``),
        drawn from ``generator``, else from a new one seeded with ``seed``, else from the global one.
        Returns False (and does nothing) when it is off. No host sync."""
        mo = self.cfg.mose
        if self.mose is None or not mo.ge_noise:  # the config refuses ge_noise without a reliance rule
            return False
        gen = generator
        if gen is None and seed is not None:
            device = next(p.device for p in self.mose.parameters() if p.requires_grad)
            gen = torch.Generator(device=device)
            gen.manual_seed(seed % (2 ** 63))
        self.mose.add_ge_noise(self.modality_gradients() if mo.scale_projectors else None, generator=gen)
        return True

    def adapter_statistics(self) -> dict[str, float]:
        """Logged scalars of the adapter's last forward (gate load per modality and expert, modality
        weights); ``{}`` without MoSE. Reads only; one device-to-host copy."""
        return self.mose.gate_statistics() if self.mose is not None else {}


def model_output(model: AdapterAccess, logits: torch.Tensor, lm_loss: torch.Tensor | None) -> MoSEAROutput:
    """The forward's output: ``loss = lm_loss + λ·balance_loss`` (MoSE), and ``aux`` with the detached
    0-d ``lm_loss`` / ``balance_loss`` tensors (no host sync: the train step reduces them once per step;
    gate statistics are read separately, :meth:`AdapterAccess.adapter_statistics`)."""
    tuner = model.mose
    bal = tuner.balance_loss() if tuner is not None else None
    aux: dict[str, torch.Tensor] = {}
    if bal is not None:
        aux["balance_loss"] = bal.detach()
    loss = None
    if lm_loss is not None:
        aux["lm_loss"] = lm_loss.detach()
        loss = lm_loss + model.cfg.mose.balance_loss_weight * bal if bal is not None else lm_loss
    return MoSEAROutput(loss=loss, logits=logits, lm_loss=lm_loss, balance_loss=bal, aux=aux)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
