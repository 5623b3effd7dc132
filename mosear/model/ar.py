"""AR (attention reallocation) as a transformers attention implementation, plus a monitor mode.

``set_attention_mode(model, "ar", threshold=τ, fraction=f, layers=..., heads=...)`` switches the LLM to
the attention function registered under :data:`ATTN_NAME` through transformers'
``AttentionInterface.register`` (and the matching additive mask through ``AttentionMaskInterface``).
No forward is patched and no hook is installed: transformers calls the function for every attention
layer; the function finds its settings on the attention module, which references its
:class:`AttentionReallocator` (attribute ``mosear_ar_controller``, set by :func:`set_attention_mode`; all
AR state lives on the controller, none in this module), and the modality id of every key through the model's
:class:`~mosear.model.modality.ModalityContext` (which covers cached generation).

The function computes attention exactly as transformers' eager attention
(``softmax(q·kᵀ·scale + mask)`` in float32, cast to the query dtype). In the chosen layers and heads,
for each chosen query row with probabilities ``p`` over keys (our reconstruction of the paper's AR)::

    a = Σ_{j ∈ audio} p_j        v = Σ_{j ∈ visual} p_j        s = a / (a + v)      (audio share)
    v' = v + ε·Σ_{j not PAD} p_j      (ε = 2⁻¹⁰⁰: v' == v in float32 for v ≥ 2⁻⁷⁵; v' > 0 even if v = 0)
    if s > τ:
        p_j ← (1 - f·v/v') · p_j              for audio keys j
        p_j ← p_j + f · a · p_j / v'          for visual keys j   (in proportion to their weights)

so the row still sums to 1 (the mass ``f·a·v/v'``, i.e. ``f·a``, moves from audio to visual keys), the
audio mass of an affected row becomes ``(1 - f)·a``, a row without visual mass (``v = 0``) is left
unchanged (nothing to move it to; no division by zero), and nothing else changes. Defaults: τ = 0.5,
f = 0.0 (off), all layers, all heads, text query rows only (``queries="text"``: the instruction and
generated tokens; ``"all"`` also reallocates for visual/audio query rows). ``f = 0`` is bit-identical
to eager attention.

How it is computed. Cached decoding is bound by host time per op (Python and kernel launches), not by
FLOPs, so a layer call does few ops. The key columns ``K`` [B, Lk, 5] = (text, test, visual, audio,
visual + ε) with ``test = (1-τ)·[audio] - τ·[visual]``, and ``M`` [B, 5, Lk] (rows 0, 0, −audio, +visual,
0) are built once per prompt for a capacity of ``L + 64`` keys (doubling the 64 when outgrown; generated
keys are text) and cut to ``[..., :Lk]`` (views) once per forward call. Per layer, over the ``N = heads ×
rows`` rows::

    m = p @ K                                     bmm: per row (t, test, v, a, v'); s > τ ⇔ test > 0
    X = where(test > 0, m, 0) / v'                [B, N, 5]; columns 2, 3: (v, a) / v' in hit rows
    X ← X · f·[chosen row]                        only where rows differ (heads or query rows chosen)
    p ← p + p · (X @ M)                           bmm + addcmul: audio keys × (1 - X₂), visual × (1 + X₃)

A decoding step chooses every query row, so with all heads chosen ``f`` is folded into a cached ``f·M``
and the third line disappears: a layer call costs 2 bmm, gt, where, div and addcmul (plus views), and
skips eager's no-op cast (float32 models) and no-op dropout (eval) calls.

Options (our reconstruction; defaults as above). ``share="token"``: the test uses the mass per key,
``s = (a/n_a) / (a/n_a + v/n_v)`` with ``n_a``, ``n_v`` the sample's audio / visual keys (Emotion-LLaMA has
259 visual and 1 audio token: a 0.5 mass share there is a 259× per-key preference); the mass moved is
still ``f·a``. ``direction="both"`` (needs τ ≥ 0.5): rows whose visual share exceeds τ (``1 - s > τ``)
move ``f·v`` from visual to audio keys the same way (``p_j ← p_j + f·v·p_j/a'`` on audio keys,
``p_j ← (1 - f·a/a')·p_j`` on visual keys, ``a' = a + ε·Σp``); audio-dominated rows as above. Either
way rows keep their sums.

Monitor mode (and AR mode) record, per sample, the attention share of text query rows on text / visual /
audio keys, averaged over the chosen layers, heads and query rows (after reallocation in AR mode):
:meth:`AttentionReallocator.shares` -> ``[B, 3]`` in :data:`MODALITY_NAMES` order. A layer call only
keeps its ``m`` (and ``X``); the sums are reduced (float64) when :meth:`~AttentionReallocator.shares`
is read, in a few ops per group of equally shaped records, with the mass after AR
``(t, v + μ, a - μ)``, ``μ = X₂·a = f·a·v/v'`` (``X₂·a·f`` where ``f`` was folded into ``M``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface

from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL, ModalityContext

ATTN_NAME = "mosear_ar"
MODES = ("sdpa", "eager", "ar", "monitor")

__all__ = ["ATTN_NAME", "AttentionReallocator", "ar_attention_forward", "reallocate", "set_attention_mode"]

# ε of the key column "visual + ε" (v' = v + ε·Σp). 2⁻¹⁰⁰ rather than finfo(float32).tiny (2⁻¹²⁶): ε·p_j
# stays a normal float for p_j ≥ 2⁻²⁶, so v' > 0 even where a GEMM flushes subnormals to zero, while
# f / v' ≤ 2¹⁰⁰·Lk is finite and v + ε rounds to v for any v ≥ 2⁻⁷⁵ (ε is below half its float32 ulp).
_EPS = 2.0**-100
# layer-call records kept before they are folded into the sums: bounds memory on long generations
_MAX_PENDING = 1024
# key columns are built for the prompt plus this many generated keys, doubled whenever outgrown
_KEY_CAPACITY_STEP = 64

# the attribute of a bound attention module that references its controller (set_attention_mode)
_CONTROLLER_ATTR = "mosear_ar_controller"


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
    share: str = "mass"  # "mass" | "token": the audio share from attention mass, or from mass per key
    direction: str = "audio"  # "audio": audio -> visual only; "both": from whichever modality dominates
    _sum: torch.Tensor | None = field(default=None, repr=False)  # [B, 3] float64: weighted masses
    _count: torch.Tensor | None = field(default=None, repr=False)  # [B] float64: chosen rows
    _pending: list = field(default_factory=list, repr=False)  # (m, X | None, step masks) per layer call
    _batch: tuple | None = field(default=None, repr=False)  # (B, device) of the records
    _step: Any = field(default=None, repr=False)  # masks of the current forward call
    _keys: Any = field(default=None, repr=False)  # _KeyColumns of the current prompt
    _rows: dict = field(default_factory=dict, repr=False)  # decoding step's row weights by shape
    _constants: dict = field(default_factory=dict, repr=False)  # (values, device) -> constant tensor (built once)

    def __post_init__(self) -> None:
        if self.mode not in ("ar", "monitor"):
            raise ValueError(f"mode must be 'ar' or 'monitor', got {self.mode!r}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.queries not in ("text", "all"):
            raise ValueError(f"queries must be 'text' or 'all', got {self.queries!r}")
        if self.share not in ("mass", "token"):
            raise ValueError(f"share must be 'mass' or 'token', got {self.share!r}")
        if self.direction not in ("audio", "both"):
            raise ValueError(f"direction must be 'audio' or 'both', got {self.direction!r}")
        if self.direction == "both" and self.threshold < 0.5:
            raise ValueError(f"direction='both' needs threshold >= 0.5 (else a row can be over it both ways), "
                             f"got {self.threshold}")

    def applies_to(self, layer_idx: int) -> bool:
        return self.layers is None or layer_idx in self.layers

    def reset(self) -> None:
        self._sum, self._count, self._pending, self._batch, self._step = None, None, [], None, None

    def shares(self, on_device: bool = False) -> torch.Tensor:
        """Mean attention share ``[B, 3]`` (text, visual, audio keys) since the last :meth:`reset`
        (float64; on the CPU, or left on the model's device with ``on_device=True``: no host sync)."""
        self._fold()
        if self._sum is None:
            raise RuntimeError("no attention was recorded (run a forward in 'monitor' or 'ar' mode first)")
        out = self._sum / self._count.clamp_min(1).unsqueeze(1)
        return out if on_device else out.cpu()

    def step_masks(self, B: int, H: int, Lq: int, Lk: int, device: torch.device) -> "_StepMasks":
        """Masks of the current forward call, built once and shared by all layers (few GPU kernels).

        The key columns come from a per-prompt cache of capacity ``L + 64·2^k`` keys (views ``[..., :Lk]``
        per call), and a cached decoding step's row weights from a cache by shape: a decoding step builds
        nothing but two views."""
        ids = self.context.ids
        heads = tuple(self.heads) if self.heads is not None else None
        key = ((B, H, Lq, Lk), device, torch.is_inference_mode_enabled(), torch.is_grad_enabled(),
               self.threshold, self.fraction, heads, self.queries, self.share, self.direction)  # views made in inference mode stay there
        st = self._step
        if st is not None and st.ids is ids and st.key == key:
            return st
        cols = self._key_columns(ids, B, Lk, device)
        if Lq < ids.shape[1]:
            # a cached decoding step: every query row is a generated (text) token, so all rows are chosen
            rows, (row_wf, row_w, n_rows) = None, self._decode_rows(B, H, Lq, device, heads)
        else:
            rows, row_wf, row_w, n_rows = self._call_rows(B, H, Lq, device, heads)
        fold = row_wf is None  # every row of every chosen head: f sits in the cached f·M
        self._step = _StepMasks(ids, key, cols.keys.narrow(1, 0, Lk),
                                (cols.move_f if fold else cols.move).narrow(2, 0, Lk), rows, row_wf, row_w,
                                n_rows, self.fraction if fold else 1.0)
        return self._step

    def _key_columns(self, ids: torch.Tensor, B: int, Lk: int, device: torch.device) -> "_KeyColumns":
        """``K``, ``M`` and ``f·M`` of this prompt for a capacity of keys >= ``Lk`` (generated keys are text)."""
        kc = self._keys
        same = (kc is not None and kc.ids is ids and kc.batch == B and kc.device == device
                and kc.threshold == self.threshold and kc.fraction == self.fraction
                and kc.options == (self.share, self.direction))
        if same and Lk <= kc.capacity:
            return kc
        L = ids.shape[1]
        extra = _KEY_CAPACITY_STEP
        while L + extra < Lk:
            extra *= 2
        with torch.inference_mode(False):  # normal tensors: usable inside and outside inference mode
            keys, move = _key_masks(self.context.key_ids(B, L + extra).to(device), self.threshold,
                                    self.share, self.direction, self._constants)
            self._keys = _KeyColumns(ids, B, device, self.threshold, self.fraction, L + extra, keys, move,
                                     move * self.fraction, (self.share, self.direction))
        return self._keys

    def _decode_rows(self, B: int, H: int, Lq: int, device: torch.device, heads: tuple | None) -> tuple:
        """(row_wf or None when f is folded into ``M``, row_w, n_rows) of a cached decoding step (cached)."""
        key = (B, H, Lq, device, heads, self.fraction)
        got = self._rows.get(key)
        if got is None:
            with torch.inference_mode(False):
                head, n_heads = _head_weights(H, heads, device, self._constants)
                row = head.repeat_interleave(Lq).expand(B, H * Lq).unsqueeze(2).contiguous()  # [B, H·Lq, 1]
                got = (None if heads is None else row * self.fraction, row / max(n_heads, 1.0),
                       torch.full((B,), float(Lq), dtype=torch.float64, device=device))
            self._rows = {key: got}
        return got

    def _call_rows(self, B: int, H: int, Lq: int, device: torch.device, heads: tuple | None) -> tuple:
        """(rows, row_wf, row_w, n_rows) of a call over the whole prompt (prefill, no-cache generation)."""
        q_ids = self.context.ids_for(B, Lq).to(device)
        qsel = ((q_ids == TEXT) if self.queries == "text" else (q_ids != PAD)).float()  # [B, Lq]
        # only query rows chosen in some sample are touched (text rows: ~1/5 of an Emotion-LLaMA prompt);
        # one host sync per call, not per layer
        rows = torch.nonzero(qsel.any(0)).squeeze(1)  # [R]
        rows = None if rows.numel() == Lq else rows
        qsub = qsel if rows is None else qsel.index_select(1, rows)  # [B, R]
        head, n_heads = _head_weights(H, heads, device, self._constants)
        row_w = (head[None, :, None] * qsub[:, None, :]).reshape(B, -1, 1)  # [B, H·R, 1]: head × row chosen
        return rows, row_w * self.fraction, row_w / max(n_heads, 1.0), qsel.sum(1).double()

    def record(self, mass: torch.Tensor, x: torch.Tensor | None, st: "_StepMasks") -> None:
        """Keep one layer call's ``m`` [B, N, 5] and AR's ``X`` [B, N, 5] (None: nothing moved) until
        :meth:`shares` reduces them; a different batch size or device starts over."""
        batch = (mass.shape[0], mass.device)
        if batch != self._batch:
            self._sum, self._count, self._pending, self._batch = None, None, [], batch
        if mass.requires_grad:  # the shares carry no gradient and must not hold the autograd graph
            mass, x = mass.detach(), None if x is None else x.detach()
        self._pending.append((mass, x, st))
        if len(self._pending) > _MAX_PENDING:
            self._fold()

    def _fold(self) -> None:
        """Add the pending records to the float64 sums: one stack per group of equally shaped records
        (prefill, decoding steps) and a few ops, instead of a reduction per layer call."""
        groups: dict[tuple, list] = {}
        for rec in self._pending:
            groups.setdefault((rec[0].shape, rec[1] is None, rec[2].x_scale), []).append(rec)
        self._pending = []
        with torch.no_grad():
            for recs in groups.values():
                mass = torch.stack([m for m, _, _ in recs])  # [n, B, N, 5 or 7]
                t, v, a = mass[..., 0:1], mass[..., 2:3], mass[..., 3:4]  # each [n, B, N, 1]
                if recs[0][1] is not None:
                    # X₂·a = f·a·v/v' (X₂ = v/v' where f sits in M: x_scale = f); direction "both" also
                    # moves X₈·v = f·v·a/a' back from visual to audio keys
                    xs = torch.stack([x for _, x, _ in recs])
                    moved = xs[..., 2:3] * a
                    if xs.shape[-1] == 10:
                        moved = moved - xs[..., 8:9] * v
                    if recs[0][2].x_scale != 1.0:
                        moved = moved * recs[0][2].x_scale
                    v, a = v + moved, a - moved  # the mass AR moved from audio to visual keys
                w = torch.stack([st.row_w for _, _, st in recs])  # [n, B, N, 1]
                part = (torch.cat([t, v, a], dim=-1) * w).sum(dim=(0, 2), dtype=torch.float64)  # [B, 3]
                count = torch.stack([st.n_rows for _, _, st in recs]).sum(0)  # [B]
                # out of place: the sums may come from torch.inference_mode() and be added to outside it
                self._sum = part if self._sum is None else self._sum + part
                self._count = count if self._count is None else self._count + count


@dataclass
class _StepMasks:
    ids: Any  # the context's ids tensor this was built for (held so its identity stays unique)
    key: tuple  # shapes, device, autograd mode and settings it was built for
    key_masks: torch.Tensor  # [B, Lk, 5] float: text, test, visual, audio, visual + ε (see _key_masks); 7: both
    key_move: torch.Tensor  # [B, 5, Lk] float: rows 2, 3 = -audio, +visual (times f where x_scale = f); 10: both
    rows: torch.Tensor | None  # [R] query rows worked on (None: all)
    row_wf: torch.Tensor | None  # [B, H·R, 1] float: f for chosen heads × query rows, else 0; None: f in M
    row_w: torch.Tensor  # [B, H·R, 1] float: 1 / n_heads for chosen heads × rows (the shares' weights)
    n_rows: torch.Tensor  # [B] float64: chosen query rows per sample
    x_scale: float = 1.0  # f where key_move carries it (X then lacks it), else 1


@dataclass
class _KeyColumns:
    """``K`` and ``M`` of one prompt for ``capacity`` keys (the prompt, then generated text keys)."""

    ids: Any  # the context's ids tensor they were built from
    batch: int
    device: torch.device
    threshold: float
    fraction: float
    capacity: int
    keys: torch.Tensor  # [B, capacity, 5] (K)
    move: torch.Tensor  # [B, 5, capacity] (M)
    move_f: torch.Tensor  # [B, 5, capacity] (f·M)
    options: tuple = ("mass", "audio")  # (share, direction) they were built for


# (values, device) -> float32 tensor; built once (a host-to-device copy is a sync on a GPU)
def _const(values: tuple, device: torch.device, cache: dict | None = None) -> torch.Tensor:
    """A float32 constant on ``device``, kept in ``cache`` (a controller's) when given: a host-to-device
    copy is a sync on a GPU, so a controller builds each one once."""
    key = (values, str(device))
    if cache is None or key not in cache:
        with torch.inference_mode(False):  # a normal tensor, usable inside and outside inference mode
            t = torch.tensor(values, dtype=torch.float32, device=device)
        if cache is None:
            return t
        cache[key] = t
    return cache[key]


def _head_weights(H: int, heads: tuple | None, device: torch.device, cache: dict | None = None) -> tuple[torch.Tensor, float]:
    """``[H]`` 1.0 for the chosen heads (all when ``heads`` is None) and how many are chosen."""
    chosen = _const(tuple(1.0 if heads is None or h in heads else 0.0 for h in range(H)), device, cache)
    return chosen, float(len(set(heads))) if heads is not None else float(H)


def _key_masks(key_ids: torch.Tensor, threshold: float, share: str = "mass", direction: str = "audio",
               cache: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Key columns of AR's two bmm's from modality ids ``key_ids`` [B, Lk] (PAD keys: all zero).

    Returns ``K`` [B, Lk, 5] (text, test, visual, audio, visual + ε) with ``test = (1-τ)·[audio] -
    τ·[visual]``, so that ``p @ K`` gives a row's ``test = (1-τ)·a - τ·v`` (> 0 ⇔ ``a/(a+v) > τ``) and
    ``v' = v + ε·Σp``; and ``M`` [B, 5, Lk] (rows 0, 0, −audio, +visual, 0: one per column of ``K``),
    which spreads ``X`` = the hit rows' ``p @ K / v'`` over the keys.

    ``share="token"``: the test columns use ``[audio]/n_a`` and ``[visual]/n_v`` (``n_m``: the sample's
    keys of modality m), i.e. the share of mass per key ``s = (a/n_a) / (a/n_a + v/n_v)``.
    ``direction="both"``: ``K`` gains ``test2 = (1-τ)·[visual]' - τ·[audio]'`` (the visual share > τ; ' =
    per key under ``share="token"``) and ``a' = audio + ε·Σp`` ([B, Lk, 7]); ``M`` [B, 10, Lk] stacks the
    audio→visual rows above and, for ``X2`` = the visual-dominated rows' ``p @ K[:5] / a'``, the rows
    (0, 0, +audio, −visual, 0).
    """
    tau = threshold
    if share != "mass" or direction != "audio":
        return _key_masks_options(key_ids, tau, share, direction)
    by_id = {PAD: (0.0,) * 10,  # K columns, then M rows
             TEXT: (1.0, 0.0, 0.0, 0.0, _EPS) + (0.0,) * 5,
             VISUAL: (0.0, -tau, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # visual + ε: 1 + ε rounds to 1
             AUDIO: (0.0, 1.0 - tau, 0.0, 1.0, _EPS, 0.0, 0.0, -1.0, 0.0, 0.0)}
    table = _const(tuple(by_id[i] for i in range(PAD, AUDIO + 1)), key_ids.device, cache)  # [4, 10], row id - PAD
    cols = table[key_ids - PAD]  # [B, Lk, 10]
    return cols[..., :5].contiguous(), cols[..., 5:].transpose(1, 2).contiguous()


def _key_masks_options(key_ids: torch.Tensor, tau: float, share: str, direction: str) -> tuple[torch.Tensor, ...]:
    """:func:`_key_masks` for the token share and / or both directions (formulas in its docstring)."""
    vis, aud = (key_ids == VISUAL).float(), (key_ids == AUDIO).float()  # [B, Lk]
    txt = (key_ids == TEXT).float()
    zero = torch.zeros_like(vis)
    if share == "token":
        vn = vis / vis.sum(1, keepdim=True).clamp_min(1)
        an = aud / aud.sum(1, keepdim=True).clamp_min(1)
    else:
        vn, an = vis, aud
    keys = [txt, (1 - tau) * an - tau * vn, vis, aud, vis + _EPS * (txt + aud)]
    move = [zero, zero, -aud, vis, zero]
    if direction == "both":
        keys += [(1 - tau) * vn - tau * an, aud + _EPS * (txt + vis)]
        move += [zero, zero, aud, -vis, zero]
    return torch.stack(keys, dim=-1).contiguous(), torch.stack(move, dim=1).contiguous()


def _reallocate(p: torch.Tensor, key_masks: torch.Tensor, key_move: torch.Tensor, row_wf: torch.Tensor | None,
                inplace: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AR on the rows ``p`` [B, N, Lk] (float32). ``row_wf`` [B, N, 1]: f in chosen rows, else 0; ``None``
    when every row is chosen and ``key_move`` carries f.

    Returns (new p, ``m`` [B, N, 5] of the old p, ``X`` [B, N, 5]); ``inplace`` updates ``p`` itself.
    """
    mass = torch.bmm(p, key_masks)  # [B, N, 5]: t, test, v, a, v'
    # X = m / v' in hit rows (columns 2, 3: v/v', a/v'; M ignores the others), else 0; v' > 0 always
    if mass.shape[-1] == 7:  # direction "both": X for audio-dominated rows, X2 for visual-dominated ones
        head = mass.narrow(2, 0, 5)
        x = torch.cat([torch.where(mass.narrow(2, 1, 1) > 0, head, 0.0) / mass.narrow(2, 4, 1),
                       torch.where(mass.narrow(2, 5, 1) > 0, head, 0.0) / mass.narrow(2, 6, 1)], dim=2)
    else:
        x = torch.where(mass.narrow(2, 1, 1) > 0, mass, 0.0) / mass.narrow(2, 4, 1)  # [B, N, 5]
    if row_wf is not None:
        x = x * row_wf
    scale = torch.bmm(x, key_move)  # [B, N, Lk]: -f·v/v' on audio keys, f·a/v' on visual keys, else 0
    p = p.addcmul_(p, scale) if inplace else torch.addcmul(p, p, scale)
    return p, mass, x


def reallocate(p: torch.Tensor, key_ids: torch.Tensor, threshold: float, fraction: float,
               row_sel: torch.Tensor, share: str = "mass", direction: str = "audio") -> torch.Tensor:
    """Move ``fraction`` of the audio mass to visual keys where the audio share exceeds ``threshold``.

    ``p`` [B, H, Lq, Lk] (probabilities, float32), ``key_ids`` [B, Lk], ``row_sel`` bool broadcastable to
    [B, H, Lq, 1] (chosen heads and query rows). Formula in the module docstring; rows keep their sums.
    Returns a new tensor (``p`` is not changed).
    """
    B, H, Lq, Lk = p.shape
    key_masks, key_move = _key_masks(key_ids.to(p.device), threshold, share, direction)
    row_wf = row_sel.expand(B, H, Lq, 1).reshape(B, H * Lq, 1).to(p.dtype) * fraction
    return _reallocate(p.reshape(B, H * Lq, Lk), key_masks, key_move, row_wf, inplace=False)[0].view_as(p)


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
        attn_weights = attn_weights + attention_mask  # transformers builds it [B, 1, Lq, Lk], like eager's
    p = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32)

    ctl = getattr(module, _CONTROLLER_ATTR, None)
    layer_idx = getattr(module, "layer_idx", None)
    if ctl is not None and layer_idx is not None and ctl.applies_to(layer_idx):
        B, H, Lq, Lk = p.shape
        st = ctl.step_masks(B, H, Lq, Lk, p.device)
        sub = p if st.rows is None else p.index_select(2, st.rows)  # [B, H, R, Lk]
        flat = sub.view(B, -1, Lk)  # [B, H·R, Lk] (a view: in-place changes reach sub)
        if ctl.mode == "ar" and ctl.fraction > 0:
            # in place unless autograd records p (softmax saved it for its backward)
            inplace = not flat.requires_grad
            flat, mass, x = _reallocate(flat, st.key_masks, st.key_move, st.row_wf, inplace)
            if not inplace:
                sub = flat.view_as(sub)
            if st.rows is None:
                p = sub
            else:
                p = p.index_copy_(2, st.rows, sub) if inplace else p.index_copy(2, st.rows, sub)
        else:
            mass, x = torch.bmm(flat, st.key_masks), None
        ctl.record(mass, x, st)

    if p.dtype != query.dtype:  # skipped calls are no-ops (each one is host time in a decoding step)
        p = p.to(query.dtype)
    if dropout > 0 and module.training:
        p = nn.functional.dropout(p, p=dropout, training=True)
    attn_output = torch.matmul(p, value_states)
    return attn_output.transpose(1, 2).contiguous(), p


def register_ar_attention() -> None:
    """Register :func:`ar_attention_forward` (and transformers' eager mask) under :data:`ATTN_NAME`."""
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_NAME, ar_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, eager_mask)


register_ar_attention()


def _resolve(model: Any, context: ModalityContext | None) -> tuple[nn.Module, ModalityContext | None]:
    ctx = context if context is not None else getattr(model, "modality_context", None)
    target = getattr(model, "attention_module", None)  # a model whose decoder is not its whole LM (hf_av)
    if target is not None:
        return target, ctx
    lm = getattr(model, "lm", model)
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base, ctx


def set_attention_mode(model: Any, mode: str, *, threshold: float = 0.5, fraction: float = 0.0,
                       layers: list[int] | None = None, heads: list[int] | None = None, queries: str = "text",
                       share: str = "mass", direction: str = "audio",
                       context: ModalityContext | None = None) -> AttentionReallocator | None:
    """Switch the LLM's attention: ``"sdpa"`` (fast default), ``"eager"``, ``"ar"`` or ``"monitor"``.

    ``model`` is a :class:`~mosear.model.mosear_model.MoSEARModel` (or a transformers causal LM, then pass
    ``context``). Returns the :class:`AttentionReallocator` for ``"ar"``/``"monitor"`` (also stored as
    ``model.ar_controller``), else ``None``.
    """
    if mode not in MODES:
        raise ValueError(f"attention mode must be one of {MODES}, got {mode!r}")
    lm, ctx = _resolve(model, context)
    attn_modules = [m for m in lm.modules() if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups")]
    for m in attn_modules:
        m.__dict__.pop(_CONTROLLER_ATTR, None)
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
        controller = AttentionReallocator(ctx, mode, threshold, fraction, layers, heads, queries, share, direction)
        for m in attn_modules:
            setattr(m, _CONTROLLER_ATTR, controller)  # a plain attribute: the module references its controller
        lm.set_attn_implementation(ATTN_NAME)
    else:
        lm.set_attn_implementation(mode)
    if hasattr(model, "lm"):
        model.ar_controller = controller
    return controller
