"""MoSE layers: a shared LoRA ``A``, K expert ``B`` matrices per modality, a per-modality gate.

For an input row ``x_t`` (a sequence position) whose modality is ``m = m(t)`` (text / visual / audio,
from the model's :class:`~mosear.model.modality.ModalityContext`)::

    h_t     = A · dropout(x_t)                        A ∈ R^{r × d_in}           (shared by all experts)
    g_t     = softmax(G_m · h_t / τ)   ∈ R^K          G_m ∈ R^{K × r}            (gate of modality m)
              (top-k: keep the k largest, renormalise; gate="none": g_t = 1/K)
    u_t     = Σ_k g_{t,k} · B_{e(m),k} · h_t          B_{e,k} ∈ R^{d_out × r}     (e(m) = m, or 0 if shared)
    y_t     = W0 · x_t + (α / r) · w_m · u_t                                        (w_m: modality weight)

Padding positions (modality ``PAD``) get no update. Implementation: the update is one matmul
``B_all · z_t`` with ``B_all ∈ R^{d_out × (E·K·r)}`` and ``z_t`` the outer product ``g_t ⊗ h_t`` placed in
the block of expert set ``e(m)`` (zeros elsewhere), scaled by ``w_m``; no gather/scatter.

Load-balancing regulariser (our reconstruction, Switch-Transformer style, per layer): for the tokens
``T_m`` of modality ``m``, ``f_{m,k}`` = share of ``T_m`` whose largest gate weight is expert k,
``P_{m,k}`` = mean gate weight of expert k over ``T_m``; ``L_m = K · Σ_k f_{m,k} · P_{m,k}`` (1 when the
load is uniform, K when one expert takes everything). The layer's loss is the mean of ``L_m`` over the
modalities present; gradients reach the gates (through ``P``) and ``A`` (through ``h``), never the same
layer's ``B`` (earlier layers' parameters get gradient through the hidden states they produce).

Dynamic modality weights (our reconstruction): in training mode, each layer measures the relative
contribution of its update per modality, ``c_m ← μ·c_m + (1-μ)·mean_{t∈T_m} ||u_t|| / (||W0 x_t|| + ε)``,
and sets, for audio and visual, ``w_m = clip((c̄ / c_m)^γ, w_min, w_max)`` with ``c̄ = (c_audio + c_visual)/2``
(the modality whose experts change the output more is turned down); ``w_text = 1``. Until both are
measured (``c > 0``), ``w = 1``. The weights are buffers (saved with the adapter, no gradient); the
gradient reaching ``A``, ``B`` and the gates through a token of modality ``m`` is scaled by ``w_m``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from mosear.model.modality import AUDIO, NUM_MODALITIES, PAD, VISUAL, ModalityContext

_EPS = 1e-6


class ModalityGate(nn.Module):
    """Per-modality gate over K experts: ``g = softmax(G[m] · h / τ)``, optional top-k."""

    def __init__(self, r: int, num_experts: int, temperature: float, top_k: int | None, kind: str) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.temperature = temperature
        self.top_k = top_k
        self.kind = kind
        # [M, K, r]: one K×r gate matrix per modality; zeros = uniform gate at start
        self.weight = nn.Parameter(torch.zeros(NUM_MODALITIES, num_experts, r))

    def forward(self, h: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """``h`` [N, r], ``modality`` [N] (PAD allowed) -> gate weights [N, K], rows sum to 1."""
        n, k = h.shape[0], self.num_experts
        if self.kind == "none" or k == 1:
            return h.new_full((n, k), 1.0 / k)
        logits_all = torch.einsum("nr,mkr->nmk", h, self.weight.to(h.dtype))  # [N, M, K]
        m = modality.clamp_min(0)  # PAD rows: any gate, their update is zeroed later
        logits = logits_all.gather(1, m.view(n, 1, 1).expand(n, 1, k)).squeeze(1)  # [N, K]
        g = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_k is not None and self.top_k < k:
            keep = torch.zeros_like(g).scatter(1, g.topk(self.top_k, dim=-1).indices, 1.0)
            g = g * keep
            g = g / g.sum(-1, keepdim=True)
        return g.to(h.dtype)


class MoSELayer(BaseTunerLayer):
    """State shared by MoSE layer types (only ``nn.Linear`` is supported)."""

    adapter_layer_names = ("mose_A", "mose_B", "mose_gate")
    other_param_names = ("r", "scaling", "mose_dropout", "mose_contribution", "mose_modality_weight")

    def __init__(self, base_layer: nn.Module, context: ModalityContext, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.context = context  # plain reference, not a submodule (set by MoSEModel)
        self.r: dict[str, int] = {}
        self.scaling: dict[str, float] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self.mose_dropout = nn.ModuleDict({})
        self.mose_A = nn.ModuleDict({})
        self.mose_B = nn.ParameterDict({})
        self.mose_gate = nn.ModuleDict({})
        self.mose_contribution = BufferDict({}, persistent=True)
        self.mose_modality_weight = BufferDict({}, persistent=True)
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        # last forward's statistics per adapter (for logging / the regulariser)
        self.last_balance_loss: dict[str, torch.Tensor] = {}
        self.last_gate_load: dict[str, torch.Tensor] = {}
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"MoSE adapts nn.Linear layers only, got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.kwargs = kwargs

    def update_layer(self, adapter_name: str, config: Any) -> None:
        r, k = config.r, config.num_experts
        e = 1 if config.share_experts else NUM_MODALITIES
        self.r[adapter_name] = r
        self.scaling[adapter_name] = config.lora_alpha / r
        self.settings[adapter_name] = {
            "num_experts": k,
            "expert_sets": e,
            "dynamic": config.dynamic_weights,
            "momentum": config.weight_momentum,
            "gamma": config.weight_strength,
            "wmin": config.weight_min,
            "wmax": config.weight_max,
            "gate": config.gate,
        }
        self.mose_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.mose_A[adapter_name] = nn.Linear(self.in_features, r, bias=False)
        # [d_out, E, K, r]: B_all.view(d_out, E*K*r) is the update matmul's weight
        self.mose_B[adapter_name] = nn.Parameter(torch.zeros(self.out_features, e, k, r))
        self.mose_gate[adapter_name] = ModalityGate(r, k, config.gate_temperature, config.top_k, config.gate)
        self.mose_contribution[adapter_name] = torch.zeros(NUM_MODALITIES)
        self.mose_modality_weight[adapter_name] = torch.ones(NUM_MODALITIES)
        self.reset_parameters(adapter_name, config.init_weights)
        # adapter weights live on the base weight's device in float32 (as peft's LoRA does by default);
        # inputs are cast to float32 in forward and the result back to the base output's dtype
        device = self.get_base_layer().weight.device
        for name in ("mose_A", "mose_gate"):
            getattr(self, name)[adapter_name].to(device=device, dtype=torch.float32)
        self.mose_B[adapter_name] = nn.Parameter(self.mose_B[adapter_name].data.to(device=device, dtype=torch.float32))
        for name in ("mose_contribution", "mose_modality_weight"):
            getattr(self, name)[adapter_name] = getattr(self, name)[adapter_name].to(device=device, dtype=torch.float32)
        self.set_adapter(self.active_adapters)

    def reset_parameters(self, adapter_name: str, init_weights: bool = True) -> None:
        """A: Kaiming-uniform (as LoRA's A); B: zeros (update starts at 0) unless ``init_weights=False``."""
        nn.init.kaiming_uniform_(self.mose_A[adapter_name].weight, a=math.sqrt(5))
        if not init_weights:  # testing: a non-zero start
            nn.init.normal_(self.mose_B[adapter_name], std=0.02)
            nn.init.normal_(self.mose_gate[adapter_name].weight, std=0.5)


class Linear(nn.Module, MoSELayer):
    """``nn.Linear`` with MoSE experts; formulas in the module docstring."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: Any, context: ModalityContext, **kwargs: Any):
        super().__init__()
        MoSELayer.__init__(self, base_layer, context, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise NotImplementedError("MoSE updates depend on each token's modality; they cannot be merged into W0")

    def unmerge(self) -> None:
        raise NotImplementedError("MoSE adapters are never merged")

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        torch_result_dtype = result.dtype
        lead = x.shape[:-1]  # [B, L]
        modality = self.context.ids_for(lead[0], lead[1]).to(x.device).reshape(-1) if x.dim() == 3 else None
        if modality is None:
            raise ValueError(f"MoSE expects [batch, length, features] inputs, got {tuple(x.shape)}")
        for name in self.active_adapters:
            if name not in self.mose_A:
                continue
            A = self.mose_A[name]
            x_in = self._cast_input_dtype(x, A.weight.dtype).reshape(-1, self.in_features)
            update = self._update(name, x_in, modality, result.detach().reshape(-1, self.out_features))
            result = result + update.reshape(*lead, self.out_features) * self.scaling[name]
        return result.to(torch_result_dtype)

    def _update(self, name: str, x: torch.Tensor, modality: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        """``w_m · u_t`` for rows ``x`` [N, d_in] with ``modality`` [N]; returns [N, d_out]."""
        st = self.settings[name]
        k, e = st["num_experts"], st["expert_sets"]
        B = self.mose_B[name]  # [d_out, E, K, r]
        h = self.mose_A[name](self.mose_dropout[name](x))  # [N, r]
        g = self.mose_gate[name](h, modality)  # [N, K]
        w = self.mose_modality_weight[name].to(h.dtype)  # [M]
        valid = modality != PAD
        w_tok = torch.where(valid, w[modality.clamp_min(0)], torch.zeros((), dtype=h.dtype, device=h.device))  # [N]
        if e == 1:
            sel = w_tok.unsqueeze(1)  # [N, 1]
        else:
            sel = F.one_hot(modality.clamp_min(0), e).to(h.dtype) * w_tok.unsqueeze(1)  # [N, E]
        if k == 1 and e == 1:
            z = sel * (g * h)  # [N, r]: g is exactly 1, so this is h (bit-exact plain LoRA path)
        else:
            z = sel[:, :, None, None] * g[:, None, :, None] * h[:, None, None, :]  # [N, E, K, r]
            z = z.reshape(z.shape[0], -1)
        out = F.linear(z, B.reshape(B.shape[0], -1))  # [N, d_out]
        self._record(name, g, modality, valid, out, w_tok, base_out, st)
        return out

    def _record(self, name, g, modality, valid, out, w_tok, base_out, st) -> None:
        """Gate load per modality, the balance loss (with grad), and the contribution EMA (training).

        Vectorised over modalities with one-hot matmuls: no host-device synchronisation on a GPU.
        """
        k = st["num_experts"]
        onehot = F.one_hot(modality.clamp_min(0), NUM_MODALITIES).float() * valid.unsqueeze(1)  # [N, M]
        counts = onehot.sum(0)  # [M]
        denom = counts.clamp_min(1).unsqueeze(1)  # [M, 1]
        gf = g.float()
        P = onehot.t() @ gf / denom  # [M, K] mean gate weight per modality
        self.last_gate_load[name] = P.detach()
        if st["gate"] == "softmax" and k > 1:
            top = F.one_hot(gf.argmax(-1), k).float()  # [N, K], no gradient
            f = onehot.t() @ top / denom  # [M, K] share of tokens whose top expert is k
            per_modality = k * (f * P).sum(-1)  # [M]
            present = (counts > 0).float()
            self.last_balance_loss[name] = (per_modality * present).sum() / present.sum().clamp_min(1)
        else:
            self.last_balance_loss.pop(name, None)
        if not (self.training and st["dynamic"]):
            return
        with torch.no_grad():
            rel = out.detach().float().norm(dim=-1) / (
                w_tok.float().clamp_min(_EPS) * (base_out.float().norm(dim=-1) + _EPS))  # [N]
            mean = (onehot.t() @ rel) / counts.clamp_min(1)  # [M]
            c = self.mose_contribution[name]
            mu = st["momentum"]
            av = torch.zeros(NUM_MODALITIES, dtype=torch.bool, device=c.device)
            av[VISUAL] = av[AUDIO] = True
            upd = av & (counts > 0)
            c.copy_(torch.where(upd, torch.where(c == 0, mean, mu * c + (1 - mu) * mean), c))
            w = self.mose_modality_weight[name]
            both = (c[VISUAL] > 0) & (c[AUDIO] > 0)
            cbar = (c[VISUAL] + c[AUDIO]) / 2
            w_new = (cbar / c.clamp_min(_EPS)).pow(st["gamma"]).clamp(st["wmin"], st["wmax"]).to(w.dtype)
            w.copy_(torch.where(av & both, w_new, w))

    def __repr__(self) -> str:
        return "mose." + super().__repr__()
