"""``MoSEModel``: the peft tuner that puts :class:`~mosear.model.mose.layer.Linear` into target layers.

Everything peft's ``BaseTuner`` does for its own tuners (target matching, module replacement and device
placement, freezing all but the adapters, enabling / disabling adapter layers, attribute forwarding to
the wrapped model) is inherited; this class adds what MoSE has that LoRA has not: the state its layers
share (:class:`~mosear.model.mose.layer.MoSEShared`), the balance loss, the modality weights and the
gate statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from mosear.model.modality import AUDIO, MODALITY_NAMES, NUM_MODALITIES, VISUAL, ModalityContext
from mosear.model.mose.config import MoSEConfig
from mosear.model.mose.layer import Linear, MoSELayer, MoSEShared, apply_weight_updates


class MoSEModel(BaseTuner):
    """Adds MoSE experts to the ``target_modules`` of a transformers model.

    The tuner owns one :class:`MoSEShared` (``self.shared``) that every MoSE layer references; the
    caller fills its modality context before each forward (``with tuner.modality_context.use(ids):``)
    and, in training, applies the layers' measurements after each backward
    (:meth:`update_modality_weights`). Reading (``state_dict``, :meth:`gate_statistics`) changes nothing.
    """

    prefix: str = "mose_"
    tuner_layer_cls = MoSELayer
    target_module_mapping: dict[str, list[str]] = {}
    uses_shared_state: bool = True  # the layers share self.shared (peft's inject_adapter_in_model refuses)

    def _pre_injection_hook(self, model: nn.Module, config: MoSEConfig, adapter_name: str) -> None:
        if "shared" not in self.__dict__:  # one per tuner, also when a second adapter is injected
            self.shared = MoSEShared()

    @property
    def modality_context(self) -> ModalityContext:
        """The context every MoSE layer reads (set it around each LM call)."""
        return self.shared.context

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key=None, **kw) -> None:
        if isinstance(target, Linear):
            target.update_layer(adapter_name, config)
            return
        new_module = Linear(target, adapter_name, config, self.shared)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def mose_layers(self) -> list[Linear]:
        return [m for m in self.model.modules() if isinstance(m, Linear)]

    def balance_loss(self, adapter_name: str | None = None) -> torch.Tensor | None:
        """Mean over layers of the last forward's load-balancing loss (not yet multiplied by lambda).

        ``L = K / |present| · Σ_{m,k} f_{m,k} P_{m,k}`` per layer (formula in :mod:`~mosear.model.mose.layer`),
        computed for all layers at once from the statistics they recorded.
        """
        name = adapter_name or self.active_adapters[0]
        losses = []
        for layout, probs in self._gate_groups(name, learned_only=True):
            k = probs.shape[-1] // NUM_MODALITIES
            row_mean = layout.row_mean.to(probs.dtype)
            load = row_mean @ probs  # [L, M*K]: P, the mean gate weight per modality block
            # f: share of each modality's rows whose top column is (m, k); PAD rows weigh 0
            top = probs.detach().argmax(-1)  # [L, N]
            f = torch.zeros_like(load).scatter_add_(1, top, row_mean.expand(top.shape[0], -1))
            losses.append((f * load).sum(-1) * (k * layout.inv_present))  # [L]
        return torch.cat(losses).mean() if losses else None

    def _gate_groups(self, name: str, learned_only: bool = False) -> list[tuple[Any, torch.Tensor]]:
        """The layers' last gate weights, stacked per forward layout: ``[(layout, probs [L, N, M*K])]``."""
        groups: dict[int, list[Any]] = {}
        for m in self.mose_layers():
            s = m.gate_stats.get(name)
            if s is not None and (s.learned or not learned_only):
                groups.setdefault(id(s.layout), []).append(s)
        return [(g[0].layout, torch.stack([s.probs for s in g])) for g in groups.values()]

    def update_modality_weights(self) -> int:
        """Apply the measurements the training forward calls queued (update-size rule; formulas in the
        layer doc): the one place the modality weights change besides :meth:`set_modality_weights`.

        Call it after each micro-batch's backward (:func:`mosear.train.step.train_step` does). Returns the
        number of measurements applied (0 for the reliance rules and without dynamic weights). No host sync.
        """
        return apply_weight_updates(self.shared)

    def set_modality_weights(self, weights: torch.Tensor, adapter_name: str | None = None) -> None:
        """Copy ``weights`` [M] (text, visual, audio) into every layer's modality weight (no host sync).

        The reliance rules (``weight_rule`` 'ogm' / 'attention', :mod:`mosear.model.mose.reliance`) compute
        one weight vector for the whole model and set it here; the layers then scale the gradient through
        each modality's rows by it.
        """
        name = adapter_name or self.active_adapters[0]
        bufs = [m.mose_modality_weight[name] for m in self.mose_layers() if name in m.mose_modality_weight]
        if bufs:
            with torch.no_grad():
                torch._foreach_copy_(bufs, [weights.to(bufs[0].device)] * len(bufs))  # copy_ casts per buffer

    def modality_weights(self, adapter_name: str | None = None) -> torch.Tensor:
        """The first adapted layer's modality weights [M] (on the device; the reliance rules set all alike)."""
        name = adapter_name or self.active_adapters[0]
        return next(m.mose_modality_weight[name] for m in self.mose_layers() if name in m.mose_modality_weight)

    def add_ge_noise(self, extra: dict[int, list[torch.Tensor]] | None = None,
                     adapter_name: str | None = None, generator: torch.Generator | None = None) -> None:
        """OGM-GE noise on this step's gradients (:func:`mosear.model.mose.reliance.add_ge_noise_`): the
        visual and audio experts' slices of every layer's ``B`` gradient, plus ``extra`` gradients by
        modality (the projectors'), for each modality whose current weight is below 1. Call after the
        backward, before clipping. No host sync."""
        from mosear.model.mose.reliance import add_ge_noise_

        name = adapter_name or self.active_adapters[0]
        grads: dict[int, list[torch.Tensor]] = {VISUAL: [], AUDIO: []}
        for layer in self.mose_layers():
            B = layer.mose_B[name] if name in layer.mose_B else None
            if B is None or B.grad is None or B.shape[1] == 1:  # shared experts: no modality slice
                continue
            for m in (VISUAL, AUDIO):
                grads[m].append(B.grad[:, m])  # a view: the noise lands in B.grad
        for m, tensors in (extra or {}).items():
            grads.setdefault(m, []).extend(t for t in tensors if t is not None)
        add_ge_noise_(grads, self.modality_weights(name), generator)

    def uses_reliance_weights(self, adapter_name: str | None = None) -> bool:
        """True when the adapter's weights come from a reliance rule (gradient-only, set by the caller)."""
        name = adapter_name or self.active_adapters[0]
        return any(m.settings[name]["grad_only"] for m in self.mose_layers() if name in m.settings)

    @torch.no_grad()
    def expert_snapshot(self, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
        """Copies of every layer's expert matrices (the reference of :meth:`expert_divergence`)."""
        name = adapter_name or self.active_adapters[0]
        return {str(i): m.mose_B[name].detach().clone() for i, m in enumerate(self.mose_layers())}

    @torch.no_grad()
    def expert_divergence(self, reference: dict[str, torch.Tensor] | None = None,
                          adapter_name: str | None = None) -> dict[str, float]:
        """How far the K experts of each modality are apart, averaged over layers and expert pairs.

        For the experts ``D_k`` of one modality in one layer (``D_k = B_{m,k}``, or ``B_{m,k} − B⁰_{m,k}``,
        what each expert learned since ``reference`` = :meth:`expert_snapshot`):
        ``d = mean_{i<j} ||D_i − D_j||_F / (½(||D_i||_F + ||D_j||_F) + ε)``: 0 when the experts are
        identical, 2 when they are opposite, ~√2 for independent random ones. Returns ``{modality name: d}``
        for the modalities with their own expert sets and K > 1 (one device-to-host copy).
        """
        name = adapter_name or self.active_adapters[0]
        vals = []
        for i, m in enumerate(self.mose_layers()):
            B = m.mose_B[name]  # [d_out, E, K, r]
            if B.shape[1] != NUM_MODALITIES or B.shape[2] < 2:
                return {}
            D = B if reference is None else B - reference[str(i)].to(B.device)
            D = D.permute(1, 2, 0, 3).flatten(2)  # [E, K, d_out*r]
            norms = D.norm(dim=-1)  # [E, K]
            dist = torch.cdist(D, D)  # [E, K, K]
            rel = dist / (0.5 * (norms.unsqueeze(2) + norms.unsqueeze(1)) + 1e-12)
            k = B.shape[2]
            iu = torch.triu_indices(k, k, 1, device=B.device)
            vals.append(rel[:, iu[0], iu[1]].mean(-1))  # [E]
        if not vals:
            return {}
        mean = torch.stack(vals).mean(0).cpu().tolist()
        return {mname: mean[mi] for mi, mname in enumerate(MODALITY_NAMES)}

    @torch.no_grad()
    def gate_statistics(self, adapter_name: str | None = None) -> dict[str, float]:
        """Scalars for logging: mean gate weight per modality and expert over the last forward, and the
        modality weights (layer means). Reads only (changes no buffer); one device-to-host copy, so call it
        when a metric row is written, not every step."""
        name = adapter_name or self.active_adapters[0]
        out: dict[str, float] = {}
        values = [torch.stack([m.mose_modality_weight[name].float() for m in self.mose_layers()]).mean(0)]
        loads = [layout.row_mean.to(probs.dtype) @ probs for layout, probs in self._gate_groups(name)]  # [L, M*K] each
        if loads:
            values.append(torch.cat(loads).mean(0).float())
        values = torch.cat(values).cpu().tolist()  # one device-to-host copy
        for mi, mname in enumerate(MODALITY_NAMES):
            out[f"modality_weight/{mname}"] = values[mi]
        k = (len(values) - NUM_MODALITIES) // NUM_MODALITIES
        for mi, mname in enumerate(MODALITY_NAMES):
            for j in range(k):
                out[f"gate/{mname}/expert{j}"] = values[NUM_MODALITIES + mi * k + j]
        return out

    def clear_statistics(self) -> None:
        for m in self.mose_layers():
            m.gate_stats.clear()
