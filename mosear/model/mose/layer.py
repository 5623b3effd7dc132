"""MoSE layers: a shared LoRA ``A``, K expert ``B`` matrices per modality, a per-modality gate.

For an input row ``x_t`` (a sequence position) whose modality is ``m = m(t)`` (text / visual / audio,
from the model's :class:`~mosear.model.modality.ModalityContext`)::

    h_t     = A · dropout(x_t)                        A ∈ R^{r × d_in}           (shared by all experts)
    g_t     = softmax(G_m · h_t / τ)   ∈ R^K          G_m ∈ R^{K × r}            (gate of modality m)
              (top-k: keep the k largest, renormalise; gate="none": g_t = 1/K)
    u_t     = Σ_k w_m · g_{t,k} · B_{e(m),k} · h_t    B_{e,k} ∈ R^{d_out × r}     (e(m) = m, or 0 if shared)
    y_t     = W0 · x_t + (α / r) · u_t                                              (w_m: modality weight)

Left-padding positions (modality ``PAD``) are computed as text rows: their outputs only reach masked
attention keys and unused query rows, so no real position sees them; every statistic below excludes them.

Implementation (few kernels per layer: training a 7B model is bound by kernel launches, not FLOPs).
All M·K gate logits come from one ``addmm`` whose additive input is the per-forward block mask (0 on the
row's own modality block, −inf elsewhere), so one softmax over M·K columns is exactly the per-modality
softmax and is 0 outside the row's block. Multiplying by ``w`` repeated per block and taking the outer
product with ``h`` gives ``z_t ∈ R^{M·K·r}``, zero outside block ``m(t)``; the update is one matmul
``u = z · B_allᵀ`` with ``B_all = mose_B.view(d_out, E·K·r)`` (shared experts: the blocks are summed to
``K·r`` first). The zero blocks cost FLOPs (E times the expert GEMM) but no extra kernels or host syncs.
The modality layout (masks, per-modality averaging weights) is built once per forward call and shared by
every layer, without a host-device synchronisation.

Load-balancing regulariser (our reconstruction, Switch-Transformer style, per layer): for the tokens
``T_m`` of modality ``m``, ``f_{m,k}`` = share of ``T_m`` whose largest gate weight is expert k,
``P_{m,k}`` = mean gate weight of expert k over ``T_m``; ``L_m = K · Σ_k f_{m,k} · P_{m,k}`` (1 when the
load is uniform, K when one expert takes everything). The layer's loss is the mean of ``L_m`` over the
modalities present; gradients reach the gates (through ``P``) and ``A`` (through ``h``), never the same
layer's ``B`` (earlier layers' parameters get gradient through the hidden states they produce). A layer
records ``P`` and each row's top expert during the forward; :meth:`MoSEModel.balance_loss` combines all
layers in a few batched operations.

Dynamic modality weights (our reconstruction): in training mode, each layer measures the relative
contribution of its update per modality, ``c_m ← μ·c_m + (1-μ)·mean_{t∈T_m} ||u_t / w_m|| / (||W0 x_t|| + ε)``,
and sets, for audio and visual, ``w_m = clip((c̄ / c_m)^γ, w_min, w_max)`` with ``c̄ = (c_audio + c_visual)/2``
(the modality whose experts change the output more is turned down); ``w_text = 1``. Until both are
measured (``c > 0``), ``w = 1``. The weights are buffers (saved with the adapter, no gradient); the
gradient reaching ``A``, ``B`` and the gates through a token of modality ``m`` is scaled by ``w_m``.
The weights change only when the training loop says so: a training forward queues its measurement
(on the tuner's :class:`MoSEShared`; nothing changes), and :meth:`MoSEModel.update_modality_weights`
applies the queue to all layers at once (:func:`apply_weight_updates`). The train step calls it after
each micro-batch's backward, so a forward uses the weights the calls before it measured. Reading
(``state_dict``/``save_pretrained``, ``gate_statistics``) never changes them.
That is ``weight_rule="update"``; with the reliance rules (``"ogm"``, ``"attention"``, our reconstruction,
formulas in :mod:`mosear.model.mose.reliance`) the caller sets ``w`` and the layer applies it to gradients
only: the forward is the ``w = 1`` forward and ``∂L/∂u_t ← w_{m(t)}·∂L/∂u_t`` (no per-row measurement).

Symmetry breaking (our reconstruction, :meth:`MoSELayer.reset_parameters`): ``expert_init_std = σ``
starts the experts of a modality at ``σ·(N_k − mean_j N_j)`` (centred: the update still starts at 0 under
the uniform start gate, but gates and experts get different gradients from the first step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from mosear.model.modality import AUDIO, NUM_MODALITIES, PAD, TEXT, VISUAL, ModalityContext

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

    @property
    def learned(self) -> bool:
        return self.kind == "softmax" and self.num_experts > 1

    def probs(self, h: torch.Tensor, layout: "_Layout") -> torch.Tensor:
        """Gate weights of every row over all ``M·K`` (modality, expert) columns ``[N, M·K]``.

        A row's weights sit in its modality's block of K columns (they sum to 1 there) and are exactly 0
        elsewhere.
        """
        k = self.num_experts
        mask, uniform = layout.blocks(k, h.dtype)
        if not self.learned:
            return uniform
        # one GEMM for all modalities' logits; -inf outside the row's block, 1/τ folded into alpha
        logits = torch.addmm(mask, h, self.weight.view(-1, h.shape[1]).t(), alpha=1.0 / self.temperature)
        g = torch.softmax(logits, dim=-1)
        if self.top_k is not None and self.top_k < k:
            keep = torch.zeros_like(g).scatter_(1, g.topk(self.top_k, dim=-1).indices, 1.0)
            g = g * keep
            g = g / g.sum(-1, keepdim=True)
        return g

    def forward(self, h: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """``h`` [N, r], ``modality`` [N] (PAD allowed, gated as text) -> gate weights [N, K], rows sum to 1."""
        layout = _Layout.build(modality.reshape(-1).to(h.device), key=None, ids=None)
        g = self.probs(h, layout).view(h.shape[0], NUM_MODALITIES, self.num_experts)
        return (g * layout.onehot.unsqueeze(2)).sum(1)  # the row's own block


class MoSELayer(BaseTunerLayer):
    """State shared by MoSE layer types (only ``nn.Linear`` is supported)."""

    adapter_layer_names = ("mose_A", "mose_B", "mose_gate")
    other_param_names = ("r", "scaling", "mose_dropout", "mose_contribution", "mose_modality_weight")

    def __init__(self, base_layer: nn.Module, shared: "MoSEShared", **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.shared = shared  # the tuner's (a plain object, not a submodule): context, layout, queue
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
        # the last forward's gate statistics per adapter (recorded when gradients are enabled)
        self.gate_stats: dict[str, GateStats] = {}
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
            # the update-size rule measures every training forward; the reliance rules ('ogm', 'attention')
            # get their weights from the caller and scale gradients only (see mosear.model.mose.reliance)
            "dynamic": config.dynamic_weights and config.weight_rule == "update",
            "grad_only": config.dynamic_weights and config.weight_rule != "update",
            # the EMA / weight rule's constants (one batched update per group of equal settings)
            "rule": (config.weight_momentum, config.weight_strength, config.weight_min, config.weight_max),
        }
        self.mose_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.mose_A[adapter_name] = nn.Linear(self.in_features, r, bias=False)
        # [d_out, E, K, r]: B_all.view(d_out, E*K*r) is the update matmul's weight
        self.mose_B[adapter_name] = nn.Parameter(torch.zeros(self.out_features, e, k, r))
        self.mose_gate[adapter_name] = ModalityGate(r, k, config.gate_temperature, config.top_k, config.gate)
        self.mose_contribution[adapter_name] = torch.zeros(NUM_MODALITIES)
        self.mose_modality_weight[adapter_name] = torch.ones(NUM_MODALITIES)
        self.reset_parameters(adapter_name, config.init_weights, config.expert_init_std, config.gate_init_std)
        # adapter weights live on the base weight's device in float32 (as peft's LoRA does by default);
        # inputs are cast to float32 in forward and the result back to the base output's dtype
        device = self.get_base_layer().weight.device
        for name in ("mose_A", "mose_gate"):
            getattr(self, name)[adapter_name].to(device=device, dtype=torch.float32)
        self.mose_B[adapter_name] = nn.Parameter(self.mose_B[adapter_name].data.to(device=device, dtype=torch.float32))
        for name in ("mose_contribution", "mose_modality_weight"):
            getattr(self, name)[adapter_name] = getattr(self, name)[adapter_name].to(device=device, dtype=torch.float32)
        self.set_adapter(self.active_adapters)

    def reset_parameters(self, adapter_name: str, init_weights: bool = True, expert_init_std: float = 0.0,
                         gate_init_std: float = 0.0) -> None:
        """A: Kaiming-uniform (as LoRA's A); B: zeros (update starts at 0) unless ``init_weights=False``.

        Symmetry breaking (our reconstruction): ``expert_init_std = σ > 0`` starts the experts of each
        modality at ``B_{m,k} = σ·(N_k − mean_j N_j)``, ``N_k ~ N(0, 1)`` elementwise, centred over the K
        experts so that ``Σ_k B_{m,k} = 0``: under a uniform gate the update is still 0 (to rounding), but
        the gate's gradient ``∂L/∂g_k ∝ (B_k h)·∂L/∂u`` differs between experts from the first step, so
        gates and experts can specialise (with all B = 0 every expert of a modality gets the same gradient
        while the gate is uniform). ``gate_init_std > 0`` draws the gate matrices ``G_m ~ N(0, σ_g²)``
        (a non-uniform start; with B = 0 the update still starts at 0).
        """
        nn.init.kaiming_uniform_(self.mose_A[adapter_name].weight, a=math.sqrt(5))
        if not init_weights:  # testing: a non-zero start
            nn.init.normal_(self.mose_B[adapter_name], std=0.02)
            nn.init.normal_(self.mose_gate[adapter_name].weight, std=0.5)
            return
        with torch.no_grad():
            B = self.mose_B[adapter_name]  # [d_out, E, K, r]
            if expert_init_std > 0 and B.shape[2] > 1:
                noise = torch.randn_like(B)
                B.copy_((noise - noise.mean(2, keepdim=True)) * expert_init_std)
            if gate_init_std > 0:
                nn.init.normal_(self.mose_gate[adapter_name].weight, std=gate_init_std)


class Linear(nn.Module, MoSELayer):
    """``nn.Linear`` with MoSE experts; formulas in the module docstring."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: Any, shared: "MoSEShared", **kwargs: Any):
        super().__init__()
        MoSELayer.__init__(self, base_layer, shared, **kwargs)
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
        if x.dim() != 3:
            raise ValueError(f"MoSE expects [batch, length, features] inputs, got {tuple(x.shape)}")
        lead = x.shape[:-1]  # [B, L]
        layout = layout_for(self.shared, lead[0], lead[1], x.device)
        for name in self.active_adapters:
            if name not in self.mose_A:
                continue
            A = self.mose_A[name]
            x_in = self._cast_input_dtype(x, A.weight.dtype).reshape(-1, self.in_features)
            u = self._update(name, x_in, layout)  # [N, d_out]
            if self.training and self.settings[name]["dynamic"]:
                self._measure(name, u, result, layout)
            result = result + u.view(*lead, self.out_features) * self.scaling[name]
        return result.to(torch_result_dtype)

    def _update(self, name: str, x: torch.Tensor, layout: "_Layout") -> torch.Tensor:
        """``u_t = w_m Σ_k g_{t,k} B_{e(m),k} h_t`` for rows ``x`` [N, d_in]; returns [N, d_out]."""
        st = self.settings[name]
        k, e = st["num_experts"], st["expert_sets"]
        B = self.mose_B[name]  # [d_out, E, K, r]
        gate = self.mose_gate[name]
        h = self.mose_A[name](self.mose_dropout[name](x))  # [N, r]
        w = self.mose_modality_weight[name]  # read every call (DDP overwrites the buffers in place before forward)
        if w.dtype != h.dtype:
            w = w.to(h.dtype)
        if st["grad_only"]:
            # reliance rules: forward unscaled, the gradient through a row of modality m scaled by w_m
            w_col, row_scale = None, torch.mv(layout.onehot.to(h.dtype), w).unsqueeze(1)  # [N, 1]
        else:
            w_col, row_scale = w.repeat_interleave(k), None  # [M*K]: w repeated per expert
        if gate.learned and gate.top_k in (None, k) and e == NUM_MODALITIES:
            # the default configuration: gate and experts in one autograd node (fewer kernels, see _GatedExperts)
            u, g = _GatedExperts.apply(h, gate.weight.view(-1, h.shape[1]), B.view(B.shape[0], -1),
                                       layout.blocks(k, h.dtype)[0], w_col, 1.0 / gate.temperature, row_scale)
        else:
            g = gate.probs(h, layout)  # [N, M*K], zero outside the row's block
            gw = g if w_col is None else g * w_col  # [N, M*K]: w_m g_t in the row's block
            if e == 1:
                gw = gw.view(-1, NUM_MODALITIES, k).sum(1)  # one expert set: blocks summed (others are 0)
            z = (gw.unsqueeze(2) * h.unsqueeze(1)).view(h.shape[0], -1)  # [N, E*K*r]
            u = F.linear(z, B.view(B.shape[0], -1))
            if row_scale is not None:
                u = scale_gradient(u, row_scale)
        if torch.is_grad_enabled():  # kept for the balance loss and logging (the gate's backward keeps g anyway)
            self.gate_stats[name] = GateStats(layout, g, gate.learned)
        else:
            self.gate_stats.pop(name, None)
        return u

    def _measure(self, name: str, u: torch.Tensor, base_out: torch.Tensor, layout: "_Layout") -> None:
        """Queue this call's ``||u_t||`` and ``||W0 x_t||`` (reduced to ``c``, ``w`` for all layers at once)."""
        with torch.no_grad():
            norms = (torch.linalg.vector_norm(u, dim=-1, dtype=torch.float32),
                     torch.linalg.vector_norm(base_out.reshape(u.shape[0], -1), dim=-1, dtype=torch.float32))
        self.shared.queue(self, name, norms, layout)

    def __repr__(self) -> str:
        return "mose." + super().__repr__()


class _GatedExperts(torch.autograd.Function):
    """``u = z · Bᵀ``, ``z_t = (w ⊙ g_t) ⊗ h_t``, ``g = softmax(mask + h·Gᵀ/τ)``: one node, hand-written backward.

    Inputs ``h`` [N, r], ``gate_w`` [M·K, r], ``B`` [d_out, M·K·r], ``mask`` [N, M·K] (0 / −inf),
    ``w_col`` [M·K] (or None: w = 1 in the forward), ``inv_tau``, ``row_scale`` [N, 1] or None: the
    gradient-only weights of the reliance rules, ``∂L/∂u_t ← row_scale_t · ∂L/∂u_t`` before everything
    else in the backward (so B, the gates, A and the input all see it; the balance loss's gradient is
    not scaled). Outputs ``u`` [N, d_out] and ``g`` [N, M·K] (for the balance loss).
    Autograd would record ten nodes here (addmm, softmax, two broadcast multiplies, linear and their views);
    the backward below needs eight kernels and no extra accumulation: the two gradients reaching ``h``
    are summed by ``addmm``, the balance loss's gradient on ``g`` by ``addcmul``.
    """

    @staticmethod
    def forward(ctx, h, gate_w, B, mask, w_col, inv_tau, row_scale=None):  # noqa: ANN001, ANN205 (autograd.Function)
        g = torch.softmax(torch.addmm(mask, h, gate_w.t(), alpha=inv_tau), dim=-1)
        gw = g if w_col is None else g * w_col
        z = (gw.unsqueeze(2) * h.unsqueeze(1)).view(h.shape[0], -1)
        u = torch.mm(z, B.t())
        ctx.save_for_backward(h, gate_w, B, w_col, g, gw, z, row_scale)
        ctx.inv_tau = inv_tau
        # the backward runs under the forward's autocast state (what torch.amp.custom_bwd does)
        device = h.device.type
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        ctx.set_materialize_grads(False)
        return u, g

    @staticmethod
    def backward(ctx, grad_u, grad_g):  # noqa: ANN001, ANN205
        device, dtype, enabled = ctx.autocast
        with torch.autocast(device_type=device, dtype=dtype, enabled=enabled):
            return _GatedExperts._backward(ctx, grad_u, grad_g)

    @staticmethod
    def _backward(ctx, grad_u, grad_g):  # noqa: ANN001, ANN205
        h, gate_w, B, w_col, g, gw, z, row_scale = ctx.saved_tensors
        n, mk = g.shape
        r = h.shape[1]
        grad_B = grad_h_experts = None
        if grad_u is not None:
            if row_scale is not None:
                grad_u = grad_u * row_scale
            grad_z = torch.mm(grad_u, B).view(n, mk, r)
            if ctx.needs_input_grad[2]:
                grad_B = torch.mm(grad_u.t(), z)
            grad_gw = torch.bmm(grad_z, h.unsqueeze(2)).view(n, mk)  # Σ_r grad_z · h
            if w_col is None:
                grad_g = grad_gw if grad_g is None else grad_g + grad_gw
            else:
                grad_g = grad_gw * w_col if grad_g is None else torch.addcmul(grad_g, grad_gw, w_col)
            grad_h_experts = torch.bmm(gw.unsqueeze(1), grad_z).view(n, r)  # Σ_j gw_j · grad_z_j
        if grad_g is None:
            return grad_h_experts, None, grad_B, None, None, None, None
        grad_logits = torch._softmax_backward_data(grad_g, g, -1, g.dtype)
        if grad_h_experts is None:
            grad_h = torch.mm(grad_logits, gate_w).mul_(ctx.inv_tau)
        else:
            grad_h = torch.addmm(grad_h_experts, grad_logits, gate_w, alpha=ctx.inv_tau)
        grad_gate = torch.mm(grad_logits.t(), h) if ctx.inv_tau == 1.0 else \
            torch.mm(grad_logits.t(), h).mul_(ctx.inv_tau)
        return grad_h, grad_gate if ctx.needs_input_grad[1] else None, grad_B, None, None, None, None


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale`` (broadcast)."""

    @staticmethod
    def forward(ctx, x, scale):  # noqa: ANN001, ANN205
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype), None


def scale_gradient(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged in the forward; ``∂L/∂x ← scale · ∂L/∂x`` in the backward (``scale`` broadcast to x)."""
    return _ScaleGradient.apply(x, scale)


@dataclass
class GateStats:
    """A layer's gate weights in its last forward call with gradients enabled (reduced by the tuner)."""

    layout: "_Layout"
    probs: torch.Tensor  # [N, M*K] gate weights (with grad), zero outside each row's block
    learned: bool  # a learned gate (the balance loss applies)


@dataclass
class _Layout:
    """Modality layout of one forward call, built once and shared by every MoSE layer (no host sync)."""

    ids: torch.Tensor | None  # the context's ids it was built for (held so that identity stays meaningful)
    key: tuple | None  # (batch, length, device, inference mode)
    onehot: torch.Tensor  # [N, M] float, PAD rows gated as text
    row_mean: torch.Tensor  # [N] 1 / |T_m(t)| (0 for PAD rows): ``row_mean @ x`` averages x per modality block
    mean_onehot: torch.Tensor  # [N, M]: 1 / |T_m| in column m for rows of modality m (PAD rows 0)
    inv_present: torch.Tensor  # [] 1 / (number of modalities with rows)
    av_present: torch.Tensor  # [M] bool: visual / audio with rows in this call
    av: torch.Tensor  # [M] bool: visual / audio (the modalities with dynamic weights)
    _blocks: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @staticmethod
    def build(modality: torch.Tensor, key: tuple | None, ids: torch.Tensor | None) -> "_Layout":
        with torch.no_grad():
            valid = modality != PAD
            mod = torch.where(valid, modality, torch.full_like(modality, TEXT))
            onehot = F.one_hot(mod, NUM_MODALITIES).float()  # [N, M]
            real = onehot * valid.unsqueeze(1)
            counts = real.sum(0)  # [M]
            mean_onehot = real / counts.clamp_min(1)
            row_mean = mean_onehot.sum(1)
            present = counts > 0
            mids = torch.arange(NUM_MODALITIES, device=modality.device)
            av = (mids == VISUAL) | (mids == AUDIO)  # built on the device: no host-to-device copy
            return _Layout(ids, key, onehot, row_mean, mean_onehot, 1.0 / present.sum().clamp_min(1),
                           av & present, av)

    def blocks(self, k: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask, uniform)`` ``[N, M·K]``: 0 / −inf gate-logit mask, and 1/K on the row's block."""
        if (k, dtype) not in self._blocks:
            with torch.no_grad():
                own = self.onehot.repeat_interleave(k, dim=1).to(dtype)  # [N, M*K]
                mask = torch.zeros_like(own).masked_fill_(own == 0, float("-inf"))
                self._blocks[k, dtype] = (mask, own / k)
        return self._blocks[k, dtype]


class MoSEShared:
    """What the MoSE layers of one model share; owned by the tuner (``MoSEModel.shared``) and referenced
    by every layer (no module-level state).

    ``context``: the modality ids the caller sets (:class:`ModalityContext`); ``layout``: the current
    forward call's :class:`_Layout` (built by the first layer, reused by the others); ``pending``: the
    measurements of training forward calls not applied yet, ``{(id(layer), adapter): [(layer, adapter,
    (||u_t||, ||W0 x_t||) [N] each, layout), ...]}`` in call order (:func:`apply_weight_updates`).
    """

    # measurements one layer may queue before the loop must apply them (bounds memory: each holds 2 x [N])
    MAX_PENDING = 64

    def __init__(self, context: ModalityContext | None = None) -> None:
        self.context = context if context is not None else ModalityContext()
        self.layout: _Layout | None = None
        self.pending: dict[tuple[int, str], list] = {}

    def queue(self, layer: Linear, name: str, norms: tuple[torch.Tensor, torch.Tensor], layout: _Layout) -> None:
        """Queue a layer's measurement (applied by :func:`apply_weight_updates`, never here)."""
        entries = self.pending.setdefault((id(layer), name), [])
        if len(entries) >= self.MAX_PENDING:
            raise RuntimeError(
                f"{len(entries)} training forward calls without applying their modality-weight measurements: "
                "call MoSEModel.update_modality_weights() after each backward (mosear.train.step.train_step does)")
        entries.append((layer, name, norms, layout))


def layout_for(shared: MoSEShared, batch: int, length: int, device: torch.device) -> _Layout:
    """The (cached) :class:`_Layout` of the current forward call."""
    ids = shared.context.ids
    key = (batch, length, device, torch.is_inference_mode_enabled())
    cached = shared.layout
    if cached is not None and cached.ids is ids and cached.key == key:
        return cached
    modality = shared.context.ids_for(batch, length).to(device).reshape(-1)
    shared.layout = _Layout.build(modality, key, ids)
    return shared.layout


# ------------------------------------------------------------------ dynamic modality weights (batched)
def apply_weight_updates(shared: MoSEShared) -> int:
    """Apply every queued measurement: contribution EMA and modality weights of all layers, batched.

    A layer measured several times since the last call takes its measurements in call order (one
    batched round per queue position). Returns the number of measurements applied.
    """
    queue, shared.pending = shared.pending, {}
    done = 0
    while queue:
        done += _apply_round([entries.pop(0) for entries in queue.values()])
        queue = {k: v for k, v in queue.items() if v}
    return done


def _apply_round(entries: list) -> int:
    """One measurement per (layer, adapter): the EMA and the weight rule of the module doc, per group."""
    groups: dict[tuple, list] = {}
    for layer, name, norms, layout in entries:
        st = layer.settings[name]
        groups.setdefault((st["rule"], id(layout)), []).append((layer, name, norms, layout))
    with torch.no_grad():
        for ((mu, gamma, wmin, wmax), _), items in groups.items():
            layout = items[0][3]
            cs = [layer.mose_contribution[name] for layer, name, _, _ in items]
            ws = [layer.mose_modality_weight[name] for layer, name, _, _ in items]
            c, w = torch.stack(cs), torch.stack(ws)  # [L, M]
            norm_u = torch.stack([n[0] for _, _, n, _ in items])  # [L, N]
            norm_base = torch.stack([n[1] for _, _, n, _ in items])
            # mean over each modality's rows of ||u_t / w_m|| / (||W0 x_t|| + eps)
            mean = (norm_u / (norm_base + _EPS)) @ layout.mean_onehot / w.clamp_min(_EPS)  # [L, M]
            present = layout.av_present
            c = torch.where(present, torch.where(c == 0, mean, torch.lerp(mean, c, mu)), c)  # mu c + (1-mu) mean
            c_va = c[:, VISUAL: AUDIO + 1]  # visual, audio (adjacent ids)
            both = (c_va > 0).all(-1, keepdim=True)
            w_new = (c_va.mean(-1, keepdim=True) / c.clamp_min(_EPS)).pow(gamma).clamp(wmin, wmax)
            w = torch.where(layout.av & both, w_new, w)
            torch._foreach_copy_(cs, list(c.unbind(0)))
            torch._foreach_copy_(ws, list(w.unbind(0)))
    return len(entries)
