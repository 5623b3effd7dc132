"""MoSE layers: a shared LoRA ``A``, K expert ``B`` matrices per modality, a per-modality gate.

For an input row ``x_t`` (a sequence position) whose modality is ``m = m(t)`` (text / visual / audio,
from the model's :class:`~mosear.model.modality.ModalityContext`)::

    h_t     = A · dropout(x_t)                        A ∈ R^{r × d_in}           (shared by all experts)
    g_t     = softmax(G_m · h_t / τ)   ∈ R^K          G_m ∈ R^{K × r}            (gate of modality m)
              (top-k: keep the k largest, renormalise; gate="none": g_t = 1/K)
    u_t     = Σ_k g_{t,k} · B_{e(m),k} · h_t          B_{e,k} ∈ R^{d_out × r}     (e(m) = m, or 0 if shared)
    y_t     = W0 · x_t + (α / r) · w_m · u_t                                        (w_m: modality weight)

Padding positions (modality ``PAD``) get no update. Implementation: ``z_t = (w_m · g_t) ⊗ h_t`` ∈ R^{K·r};
with one expert set (``share_experts``) the update is one matmul ``B_0 · z_t``; with one set per modality
the rows are sorted by modality once per forward call (shared by all layers, one host sync for the
counts), each set multiplies only its own rows (``B_e ∈ R^{d_out × (K·r)}``, a view of ``mose_B``) and the
results are put back in row order (PAD rows read a zero row). This is the same sum as multiplying an
``E·K·r``-wide outer product that is zero outside block ``e(m)``, at 1/E of the FLOPs; float rounding may
differ in the last bit from that formulation.

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
import weakref
from dataclasses import dataclass
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

    def forward(self, h: torch.Tensor, modality: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``h`` [N, r], ``modality`` [N] (PAD allowed) -> gate weights [N, K], rows sum to 1.

        ``index``: ``modality.clamp_min(0).view(N, 1, 1)`` when the caller has it already.
        """
        n, k = h.shape[0], self.num_experts
        if self.kind == "none" or k == 1:
            return h.new_full((n, k), 1.0 / k)
        m_all = self.weight.shape[0]
        logits_all = F.linear(h, self.weight.to(h.dtype).reshape(m_all * k, -1)).view(n, m_all, k)  # [N, M, K]
        if index is None:
            index = modality.clamp_min(0).view(n, 1, 1)  # PAD rows: any gate, their update is zeroed later
        logits = logits_all.gather(1, index.expand(n, 1, k)).squeeze(1)  # [N, K]
        logits = logits.float()
        g = torch.softmax(logits if self.temperature == 1.0 else logits / self.temperature, dim=-1)
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
        if x.dim() != 3:
            raise ValueError(f"MoSE expects [batch, length, features] inputs, got {tuple(x.shape)}")
        rows = _rows_for(self.context, lead[0], lead[1], x.device)
        for name in self.active_adapters:
            if name not in self.mose_A:
                continue
            A = self.mose_A[name]
            x_in = self._cast_input_dtype(x, A.weight.dtype).reshape(-1, self.in_features)
            update = self._update(name, x_in, rows, result.detach().reshape(-1, self.out_features))
            result = result + update.reshape(*lead, self.out_features) * self.scaling[name]
        return result.to(torch_result_dtype)

    def _update(self, name: str, x: torch.Tensor, rows: "_Rows", base_out: torch.Tensor) -> torch.Tensor:
        """``w_m · u_t`` for rows ``x`` [N, d_in] with the modality layout ``rows``; returns [N, d_out]."""
        st = self.settings[name]
        k, e = st["num_experts"], st["expert_sets"]
        B = self.mose_B[name]  # [d_out, E, K, r]
        d_out = B.shape[0]
        h = self.mose_A[name](self.mose_dropout[name](x))  # [N, r]
        g = self.mose_gate[name](h, rows.modality, rows.gate_index)  # [N, K]
        w = self.mose_modality_weight[name].to(h.dtype)  # [M]
        w_tok = F.pad(w, (0, 1)).index_select(0, rows.weight_index)  # [N]: w_m, 0 for PAD rows
        if k == 1 and e == 1:
            z = w_tok.unsqueeze(1) * (g * h)  # [N, r]: g is exactly 1, so this is h (bit-exact plain LoRA path)
        else:
            z = ((g * w_tok.unsqueeze(1)).unsqueeze(2) * h.unsqueeze(1)).reshape(h.shape[0], k * h.shape[1])  # [N, K*r]
        if e == 1:
            out = F.linear(z, B.reshape(d_out, -1))  # [N, d_out]
        else:
            # rows sorted by modality: each expert set multiplies only its own rows (no E-times wider matmul)
            zs = z.index_select(0, rows.perm).split(rows.sizes)
            Bs = B.unbind(1)  # E views [d_out, K, r] (backward: one stack, not E zero-filled slices)
            parts = [F.linear(zc, Bs[m].reshape(d_out, -1)) for m, zc in enumerate(zs) if rows.sizes[m] > 0]
            if rows.n_pad:
                parts.append(z.new_zeros(1, d_out))  # the row PAD positions read
            out = torch.cat(parts).index_select(0, rows.inverse)  # [N, d_out], original row order
        self._record(name, g, rows, out, w_tok, base_out, st)
        return out

    def _record(self, name: str, g: torch.Tensor, rows: "_Rows", out: torch.Tensor, w_tok: torch.Tensor,
                base_out: torch.Tensor, st: dict[str, Any]) -> None:
        """Gate load per modality, the balance loss (with grad), and the contribution EMA (training).

        Vectorised over modalities with matmuls against the per-forward modality one-hot (shared by all
        layers): no host-device synchronisation on a GPU.
        """
        k = st["num_experts"]
        gf = g.float()
        P = rows.mean_t @ gf  # [M, K] mean gate weight per modality
        self.last_gate_load[name] = P.detach()
        if st["gate"] == "softmax" and k > 1:
            # [N, K] K·(1 if expert k is the row's top expert), no gradient
            top = torch.zeros_like(gf).scatter_(1, gf.argmax(-1, keepdim=True), float(k))
            # K · f[m, k] / (number of modalities present), f = share of T_m whose top expert is k
            f = rows.mean_present_t @ top  # [M, K]
            self.last_balance_loss[name] = (f * P).sum()  # mean over present m of K Σ_k f P
        else:
            self.last_balance_loss.pop(name, None)
        if not (self.training and st["dynamic"]):
            return
        with torch.no_grad():
            rel = torch.linalg.vector_norm(out.detach(), dim=-1, dtype=torch.float32) / (
                w_tok.float().clamp_min(_EPS)
                * (torch.linalg.vector_norm(base_out, dim=-1, dtype=torch.float32) + _EPS))  # [N]
            mean = rows.mean_t @ rel  # [M]
            c = self.mose_contribution[name]
            mu = st["momentum"]
            c.copy_(torch.where(rows.av_present, torch.where(c == 0, mean, torch.add(mu * c, mean, alpha=1 - mu)), c))
            w = self.mose_modality_weight[name]
            c_va = c[VISUAL: AUDIO + 1]  # visual, audio (adjacent ids)
            both = (c_va > 0).all()
            cbar = c_va.mean()
            w_new = (cbar / c.clamp_min(_EPS)).pow(st["gamma"]).clamp(st["wmin"], st["wmax"]).to(w.dtype)
            w.copy_(torch.where(rows.av & both, w_new, w))

    def __repr__(self) -> str:
        return "mose." + super().__repr__()


@dataclass
class _Rows:
    """Row layout of one forward call, built once and shared by every MoSE layer (few GPU kernels)."""

    ids: torch.Tensor  # the context's ids it was built for (held so that identity stays meaningful)
    key: tuple  # (batch, length, device, inference mode)
    modality: torch.Tensor  # [N] ids, PAD = -1
    gate_index: torch.Tensor  # [N, 1, 1] modality clamped to >= 0 (gate row to read)
    weight_index: torch.Tensor  # [N] modality, PAD -> M (reads the 0 appended to the weights)
    perm: torch.Tensor  # [N - n_pad] non-PAD rows, sorted by modality (stable)
    sizes: list[int]  # rows per modality in ``perm``
    n_pad: int
    inverse: torch.Tensor  # [N] position of each row in the sorted rows (+ a zero row for PAD)
    mean_t: torch.Tensor  # [M, N] float: 1 / |T_m| for rows of modality m (PAD rows 0)
    mean_present_t: torch.Tensor  # [M, N] mean_t / (number of modalities present)
    av: torch.Tensor  # [M] bool: visual / audio (the modalities with dynamic weights)
    av_present: torch.Tensor  # [M] bool: visual / audio with rows in this call


_ROWS: "weakref.WeakKeyDictionary[ModalityContext, _Rows]" = weakref.WeakKeyDictionary()


def _rows_for(context: ModalityContext, batch: int, length: int, device: torch.device) -> _Rows:
    """The (cached) :class:`_Rows` of the current forward; one host sync (modality counts) per call."""
    ids = context.ids
    key = (batch, length, device, torch.is_inference_mode_enabled())
    cached = _ROWS.get(context)
    if cached is not None and cached.ids is ids and cached.key == key:
        return cached
    with torch.no_grad():
        modality = context.ids_for(batch, length).to(device).reshape(-1)
        n = modality.shape[0]
        valid = modality != PAD
        onehot = F.one_hot(modality.clamp_min(0), NUM_MODALITIES).float() * valid.unsqueeze(1)  # [N, M]
        counts = onehot.sum(0)  # [M]
        counts_host = [int(c) for c in counts.tolist()]  # the one sync
        mean_t = (onehot / counts.clamp_min(1)).t().contiguous()
        present = (counts > 0).float()
        mean_present_t = mean_t / present.sum().clamp_min(1)
        weight_index = torch.where(valid, modality, torch.full_like(modality, NUM_MODALITIES))
        perm = torch.argsort(weight_index, stable=True)  # PAD rows (index M) last
        n_pad = n - sum(counts_host)
        perm = perm[: n - n_pad]
        inverse = torch.full_like(modality, n - n_pad)  # PAD rows -> the appended zero row
        inverse[perm] = torch.arange(n - n_pad, device=device)
        mids = torch.arange(NUM_MODALITIES, device=device)
        av = (mids == VISUAL) | (mids == AUDIO)  # built on the device: no host-to-device copy
        rows = _Rows(ids, key, modality, modality.clamp_min(0).view(n, 1, 1), weight_index, perm, counts_host,
                     n_pad, inverse, mean_t, mean_present_t, av, av & (counts > 0))
    _ROWS[context] = rows
    return rows
