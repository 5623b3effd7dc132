"""AR (attention reallocation) as a transformers attention implementation, plus a monitor mode.

``set_attention_mode(model, "ar", threshold=τ, fraction=f, layers=..., heads=...)`` switches the LLM to
the attention function registered under :data:`ATTN_NAME` through transformers'
``AttentionInterface.register`` (and the matching additive mask through ``AttentionMaskInterface``).
No forward is patched and no hook is installed: transformers calls the function for every attention
layer; the function finds its settings through a weak map from the attention module to an
:class:`AttentionReallocator`, and the modality id of every key through the model's
:class:`~mosear.model.modality.ModalityContext` (which covers cached generation).

The function computes attention exactly as transformers' eager attention
(``softmax(q·kᵀ·scale + mask)`` in float32, cast to the query dtype). In the chosen layers and heads,
for each query row with probabilities ``p`` over keys (our reconstruction of the paper's AR)::

    a = Σ_{j ∈ audio} p_j        v = Σ_{j ∈ visual} p_j        s = a / (a + v)      (audio share)
    if s > τ and v > 0:
        p_j ← (1 - f) · p_j                   for audio keys j
        p_j ← p_j + f · a · p_j / v           for visual keys j   (in proportion to their weights)

so the row still sums to 1 (the mass ``f·a`` moves from audio to visual), the audio mass of an affected
row becomes exactly ``(1 - f)·a``, and nothing else changes. Defaults: τ = 0.5, f = 0.0 (off),
all layers, all heads, text query rows only (``queries="text"``: the instruction and generated tokens;
``"all"`` also reallocates for visual/audio query rows). ``f = 0`` is bit-identical to eager attention.

Monitor mode (and AR mode) record, per sample, the attention share of text query rows on visual /
audio / text keys, averaged over the chosen layers, heads and query rows (after reallocation in AR
mode): :meth:`AttentionReallocator.shares` -> ``[B, 3]`` in :data:`MODALITY_NAMES` order.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface

from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL, ModalityContext

ATTN_NAME = "mosear_ar"
MODES = ("sdpa", "eager", "ar", "monitor")

__all__ = ["ATTN_NAME", "AttentionReallocator", "ar_attention_forward", "reallocate", "set_attention_mode"]

# attention module -> controller (weak: a dropped model releases its controller)
_BINDINGS: "weakref.WeakKeyDictionary[nn.Module, AttentionReallocator]" = weakref.WeakKeyDictionary()


@dataclass
class AttentionReallocator:
    """Settings of AR / monitor for one model, and the monitor's running per-sample shares."""

    context: ModalityContext
    mode: str = "monitor"  # "ar" | "monitor"
    threshold: float = 0.5
    fraction: float = 0.0
    layers: list[int] | None = None  # None: all layers
    heads: list[int] | None = None  # None: all query heads
    queries: str = "text"  # "text" | "all"
    _sum: torch.Tensor | None = field(default=None, repr=False)  # [B, 3]
    _count: torch.Tensor | None = field(default=None, repr=False)  # [B]
    _step: Any = field(default=None, repr=False)  # masks of the current forward call

    def __post_init__(self) -> None:
        if self.mode not in ("ar", "monitor"):
            raise ValueError(f"mode must be 'ar' or 'monitor', got {self.mode!r}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.queries not in ("text", "all"):
            raise ValueError(f"queries must be 'text' or 'all', got {self.queries!r}")

    def applies_to(self, layer_idx: int) -> bool:
        return self.layers is None or layer_idx in self.layers

    def reset(self) -> None:
        self._sum, self._count, self._step = None, None, None

    def shares(self) -> torch.Tensor:
        """Mean attention share ``[B, 3]`` (text, visual, audio keys) since the last :meth:`reset`."""
        if self._sum is None:
            raise RuntimeError("no attention was recorded (run a forward in 'monitor' or 'ar' mode first)")
        return (self._sum / self._count.clamp_min(1).unsqueeze(1)).cpu()

    def step_masks(self, B: int, H: int, Lq: int, Lk: int, device: torch.device) -> "_StepMasks":
        """Masks of the current forward call, built once and shared by all layers (few GPU kernels)."""
        ids = self.context.ids
        st = self._step
        mode = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())  # inference tensors stay there
        if st is not None and st.ids is ids and st.shape == (B, H, Lq, Lk) and st.device == device and st.mode == mode:
            return st
        key_ids = self.context.key_ids(B, Lk).to(device)
        q_ids = self.context.ids_for(B, Lq).to(device)
        masks = torch.stack([key_ids == TEXT, key_ids == VISUAL, key_ids == AUDIO], dim=-1).float()  # [B, Lk, 3]
        qsel = ((q_ids == TEXT) if self.queries == "text" else (q_ids != PAD)).float()  # [B, Lq]
        n_heads = float(len(set(self.heads))) if self.heads is not None else float(H)
        head = _constant(self.heads, H, device)
        if Lq < ids.shape[1]:
            # a cached decoding step: every query row is a generated (text) token, so all rows are chosen
            rows, all_rows = None, True
        else:
            # only query rows chosen in some sample are touched (text rows: ~1/5 of an Emotion-LLaMA
            # prompt); one host sync per prefill call, not per layer
            rows = torch.nonzero(qsel.any(0)).squeeze(1)  # [R]
            all_rows = rows.numel() == Lq
        qsub = qsel if all_rows else qsel.index_select(1, rows)  # [B, R]
        row_w = head[None, :, None, None] * qsub[:, None, :, None]  # [B, H, R, 1]
        va = masks[:, None, :, 1:].transpose(-1, -2)  # [B, 1, 2, Lk]
        va_t = torch.cat([va[:, :, :1], -va[:, :, 1:]], dim=2)  # visual, -audio
        delta = torch.cat([torch.zeros(1, device=device), torch.ones(1, device=device),
                           -torch.ones(1, device=device)])
        self._step = _StepMasks(ids, (B, H, Lq, Lk), device, masks[:, None], va_t, row_w,
                                qsel.sum(1).double(), n_heads, None if all_rows else rows, mode,
                                row_w / max(n_heads, 1.0), delta)
        return self._step

    def record(self, mass: torch.Tensor, st: "_StepMasks") -> None:
        """``mass`` [B, H, Lq, 3]: each row's attention on text/visual/audio keys; accumulates on device."""
        with torch.no_grad():
            per_sample = (mass * st.row_w_mean).sum(dim=(1, 2))  # [B, 3] (float32; summed into float64)
            if self._sum is None or self._sum.shape[0] != mass.shape[0] or self._sum.device != mass.device:
                self._sum = torch.zeros(mass.shape[0], 3, dtype=torch.float64, device=mass.device)
                self._count = torch.zeros(mass.shape[0], dtype=torch.float64, device=mass.device)
            # out of place: works whether this or an earlier call ran under torch.inference_mode()
            self._sum = self._sum + per_sample
            self._count = self._count + st.qsel_sum


@dataclass
class _StepMasks:
    ids: Any  # the context's ids tensor this was built for (held so its identity stays unique)
    shape: tuple[int, int, int, int]
    device: torch.device
    masks: torch.Tensor  # [B, 1, Lk, 3] float: key is text / visual / audio
    va_t: torch.Tensor  # [B, 1, 2, Lk] float: key is visual (1) / audio (-1), else 0
    row_w: torch.Tensor  # [B, H, Lq, 1] float: 1 for chosen heads x chosen query rows
    qsel_sum: torch.Tensor  # [B] float64: chosen query rows per sample
    n_heads: float
    rows: torch.Tensor | None = None  # [R] query rows worked on (None: all)
    mode: tuple[bool, bool] = (False, True)  # (inference mode, grad enabled) it was built under
    row_w_mean: torch.Tensor | None = None  # row_w / n_heads (the monitor's per-layer weights)
    delta: torch.Tensor | None = None  # [3] (0, 1, -1): how moved mass changes (text, visual, audio)


_DELTA = (0.0, 1.0, -1.0)
# (heads, H, device) -> [H] float head selector; built once (a host-to-device copy is a sync on a GPU)
_HEADS: dict[tuple, torch.Tensor] = {}


def _constant(heads: list[int] | None, H: int, device: torch.device) -> torch.Tensor:
    if heads is None:
        return torch.ones(H, device=device)
    key = (tuple(sorted(set(heads))), H, str(device))
    if key not in _HEADS:
        _HEADS[key] = torch.tensor([1.0 if h in heads else 0.0 for h in range(H)], device=device)
    return _HEADS[key]


def _reallocate(p: torch.Tensor, st: _StepMasks, threshold: float, fraction: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """AR on ``p`` [B, H, Lq, Lk] (float32) with the step's masks; returns (new p, new mass [B, H, Lq, 3])."""
    tiny = torch.finfo(p.dtype).tiny
    mass = p @ st.masks  # [B, H, Lq, 3]: text, visual, audio mass of each row
    v, a = mass[..., 1:2], mass[..., 2:3]
    share = a / (a + v).clamp_min(tiny)
    hit_f = torch.where((share > threshold) & (v > 0), st.row_w, 0.0) * fraction  # [B, H, Lq, 1]: f or 0
    moved = hit_f * a  # audio mass moved by each row
    coef = torch.cat([moved / v.clamp_min(tiny), hit_f], dim=-1)  # [B, H, Lq, 2]: visual, audio (va_t: -audio)
    scale = (coef @ st.va_t).add_(1.0)  # [B, H, Lq, Lk]: visual keys 1 + f a / v, audio keys 1 - f, others 1
    p = p * scale if torch.is_grad_enabled() else p.mul_(scale)  # in place at inference: one buffer less
    mass = torch.addcmul(mass, moved, st.delta)  # text unchanged, visual + moved, audio - moved
    return p, mass


def reallocate(p: torch.Tensor, key_ids: torch.Tensor, threshold: float, fraction: float,
               row_sel: torch.Tensor) -> torch.Tensor:
    """Move ``fraction`` of the audio mass to visual keys where the audio share exceeds ``threshold``.

    ``p`` [B, H, Lq, Lk] (probabilities, float32), ``key_ids`` [B, Lk], ``row_sel`` bool broadcastable to
    [B, H, Lq, 1] (chosen heads and query rows). Formula in the module docstring; rows keep their sums.
    """
    B, H, Lq, Lk = p.shape
    masks = torch.stack([key_ids == TEXT, key_ids == VISUAL, key_ids == AUDIO], dim=-1).to(p.dtype)
    row_w = row_sel.expand(B, H, Lq, 1).to(p.dtype)
    va_t = masks[:, None, :, 1:].transpose(-1, -2) * torch.tensor([[1.0], [-1.0]], dtype=p.dtype, device=p.device)
    st = _StepMasks(None, (B, H, Lq, Lk), p.device, masks[:, None], va_t, row_w, row_w.sum(dim=(1, 3)).double(),
                    float(H), delta=torch.tensor(_DELTA, dtype=p.dtype, device=p.device))
    return _reallocate(p, st, threshold, fraction)[0]


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, KVH, L, D] -> [B, KVH * n_rep, L, D] (grouped-query attention)."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None, :, :].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def ar_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with AR / monitoring. ``query`` [B, H, Lq, D], ``key``/``value`` [B, KVH, Lk, D].

    Returns ``(output [B, Lq, H, D], probabilities [B, H, Lq, Lk])`` like transformers' eager attention.
    """
    n_rep = query.shape[1] // key.shape[1]
    key_states = _repeat_kv(key, n_rep)
    value_states = _repeat_kv(value, n_rep)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask[:, :, :, : key_states.shape[-2]]
    p = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32)

    ctl = _BINDINGS.get(module)
    layer_idx = getattr(module, "layer_idx", None)
    if ctl is not None and layer_idx is not None and ctl.applies_to(layer_idx):
        st = ctl.step_masks(*p.shape, p.device)
        sub = p if st.rows is None else p.index_select(2, st.rows)  # [B, H, R, Lk]
        if ctl.mode == "ar" and ctl.fraction > 0:
            sub, mass = _reallocate(sub, st, ctl.threshold, ctl.fraction)
            if st.rows is None:
                p = sub
            else:
                p = p.index_copy(2, st.rows, sub) if torch.is_grad_enabled() else p.index_copy_(2, st.rows, sub)
        else:
            mass = sub @ st.masks
        ctl.record(mass, st)

    p = p.to(query.dtype)
    p = nn.functional.dropout(p, p=dropout, training=module.training)
    attn_output = torch.matmul(p, value_states)
    return attn_output.transpose(1, 2).contiguous(), p


def register_ar_attention() -> None:
    """Register :func:`ar_attention_forward` (and transformers' eager mask) under :data:`ATTN_NAME`."""
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_NAME, ar_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, eager_mask)


register_ar_attention()


def _resolve(model: Any, context: ModalityContext | None) -> tuple[nn.Module, ModalityContext | None]:
    lm = getattr(model, "lm", model)
    ctx = context if context is not None else getattr(model, "modality_context", None)
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base, ctx


def set_attention_mode(model: Any, mode: str, *, threshold: float = 0.5, fraction: float = 0.0,
                       layers: list[int] | None = None, heads: list[int] | None = None, queries: str = "text",
                       context: ModalityContext | None = None) -> AttentionReallocator | None:
    """Switch the LLM's attention: ``"sdpa"`` (fast default), ``"eager"``, ``"ar"`` or ``"monitor"``.

    ``model`` is a :class:`~mosear.model.backbone.MoSEARModel` (or a transformers causal LM, then pass
    ``context``). Returns the :class:`AttentionReallocator` for ``"ar"``/``"monitor"`` (also stored as
    ``model.ar_controller``), else ``None``.
    """
    if mode not in MODES:
        raise ValueError(f"attention mode must be one of {MODES}, got {mode!r}")
    lm, ctx = _resolve(model, context)
    attn_modules = [m for m in lm.modules() if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups")]
    for m in attn_modules:
        _BINDINGS.pop(m, None)
    controller = None
    if mode in ("ar", "monitor"):
        if ctx is None:
            raise ValueError("AR/monitor need a ModalityContext: pass a MoSEARModel or context=")
        n_layers = len(attn_modules)
        if layers is not None and any(not 0 <= i < n_layers for i in layers):
            raise ValueError(f"layers {layers} out of range for a {n_layers}-layer model")
        n_heads = lm.config.num_attention_heads
        if heads is not None and any(not 0 <= h < n_heads for h in heads):
            raise ValueError(f"heads {heads} out of range for {n_heads} heads")
        controller = AttentionReallocator(ctx, mode, threshold, fraction, layers, heads, queries)
        for m in attn_modules:
            _BINDINGS[m] = controller
        lm.set_attn_implementation(ATTN_NAME)
    else:
        lm.set_attn_implementation(mode)
    if hasattr(model, "lm"):
        model.ar_controller = controller
    return controller
