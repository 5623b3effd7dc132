"""Reliance-driven modality weights: how much the prediction relies on each modality, not how large the
update is (the ``weight_rule`` 'ogm' and 'attention' of :class:`~mosear.model.mose.MoSEConfig`).

Both rules are our reconstruction (the MoSEAR paper only says "dynamic modality weights balance
audio-visual contributions during training"). Every ``k`` training steps (``reliance_every``) the caller
measures a reliance score per modality on the current batch without gradients, turns it into weights
``w = (1, w_visual, w_audio)`` and sets them on every MoSE layer (:meth:`MoSEModel.set_modality_weights`);
until the next measurement the layers multiply the gradient through each modality's rows by ``w_m``
(the forward is unchanged), and so does the modality's projector (:func:`scale_projector_gradient`):
everything that carries the modality into the LM learns at ``w_m`` times its rate. All on the device,
no host synchronisation.

**OGM** (on-the-fly gradient modulation, Peng et al., CVPR 2022, eq. 8–9, without the Gaussian-noise
"GE" term): the unimodal confidence of modality m is the mean over the batch of the probability of the
true answer when only m is present, ``s_m = mean_b softmax(logits_b | other modality's embeddings set
to 0)[y_b]`` (in the paper: each encoder's own share of a late-fusion classifier; an LLM has no such
split, so the other modality is masked instead: our reconstruction). With ``ρ = s_visual / s_audio``::

    w_visual = 1 − tanh(α·ρ)     if ρ > 1, else 1
    w_audio  = 1 − tanh(α / ρ)   if ρ < 1, else 1

(the dominant modality is slowed, the other one keeps its rate; the paper's form, including its step at
ρ = 1). **GE** (``ge_noise``, OGM-GE's generalisation enhancement, Peng et al. §3.3; off by default):
after the backward, every gradient ``g`` that carries a modality whose weight is below 1 (its MoSE
experts' slice of ``B`` in every layer, and its projector's parameters when ``scale_projectors``) gets
Gaussian noise of its own spread, ``g ← g + ε·std(g)``, ``ε ~ N(0, I)``, one ``std`` per tensor (per
modality slice for ``B``). The paper draws ``h ~ N(0, Σ_sgd)`` with the SGD noise covariance; the
per-tensor scalar ``std(g)`` is our reconstruction of that estimate (:func:`add_ge_noise_`).
**Attention**: the same rule on ``ρ = (a_visual / n_visual) / (a_audio / n_audio)``, the text
queries' attention mass on each modality's keys per key (``n_m`` tokens of modality m; 1 under uniform
attention), read from the monitor (:mod:`mosear.model.ar`) in one no-gradient forward.
"""

from __future__ import annotations

from typing import Any

import torch

from mosear.model.modality import AUDIO, VISUAL
from mosear.model.mose.layer import scale_gradient

__all__ = ["tanh_rule", "ogm_weights", "attention_weights", "mask_modality", "unimodal_scores",
           "scale_projector_gradient", "add_ge_noise_"]


def tanh_rule(score_visual: torch.Tensor, score_audio: torch.Tensor, alpha: float) -> torch.Tensor:
    """Weights ``[M]`` (text, visual, audio) from two reliance scores (0-d tensors; formula in the module doc)."""
    rho = score_visual.float() / score_audio.float().clamp_min(1e-12)
    one = torch.ones_like(rho)
    w_v = torch.where(rho > 1, 1 - torch.tanh(alpha * rho), one)
    w_a = torch.where(rho < 1, 1 - torch.tanh(alpha / rho.clamp_min(1e-12)), one)
    return torch.stack([one, w_v, w_a])


def ogm_weights(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """OGM weights ``[M]`` from unimodal confidences ``scores`` ``[M]`` (only the visual and audio entries used)."""
    return tanh_rule(scores[VISUAL], scores[AUDIO], alpha)


def attention_weights(shares: torch.Tensor, counts: torch.Tensor, alpha: float) -> torch.Tensor:
    """Attention-share weights ``[M]`` from attention mass ``shares`` ``[M]`` and token ``counts`` ``[M]``."""
    per_token = shares.float() / counts.float().clamp_min(1)
    return tanh_rule(per_token[VISUAL], per_token[AUDIO], alpha)


def mask_modality(inputs_embeds: torch.Tensor, modality_ids: torch.Tensor, modality: int) -> torch.Tensor:
    """``inputs_embeds`` [B, L, H] with the rows of ``modality`` (``modality_ids`` [B, L]) set to 0."""
    return inputs_embeds.masked_fill((modality_ids == modality).unsqueeze(-1), 0.0)


@torch.no_grad()
def unimodal_scores(lm: Any, context: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                    modality_ids: torch.Tensor, position_ids: torch.Tensor, score_pos: torch.Tensor,
                    target: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Unimodal confidences ``[M]`` (text entry 0): one forward over the batch twice, with audio masked in
    the first copy and visual in the second.

    ``score_pos`` [B]: the position whose next-token logits predict the answer; ``target`` [B]: the answer's
    token id, or (with ``candidates`` [C], token ids of the answer set) its index among the candidates,
    whose softmax is then taken over the candidates only. Returns ``s`` with ``s[VISUAL]`` = confidence
    with the audio rows masked and ``s[AUDIO]`` = with the visual rows masked (no host sync).
    """
    B = inputs_embeds.shape[0]
    two = lambda t: torch.cat([t, t])  # noqa: E731
    emb = torch.cat([mask_modality(inputs_embeds, modality_ids, AUDIO), mask_modality(inputs_embeds, modality_ids, VISUAL)])
    mods = two(modality_ids)
    with context.use(mods):  # one forward (half the ops of two: a 7B step is bound by ops)
        logits = lm(inputs_embeds=emb, attention_mask=two(attention_mask), position_ids=two(position_ids),
                    use_cache=False).logits
    rows = torch.arange(2 * B, device=emb.device)
    last = logits[rows, two(score_pos)].float()  # [2B, V]
    if candidates is not None:
        last = last.index_select(1, candidates)
    conf = torch.softmax(last, dim=-1).gather(1, two(target).unsqueeze(1)).view(2, B).mean(1)  # (visual, audio)
    zero = torch.zeros(1, device=emb.device, dtype=conf.dtype)
    return torch.cat([zero, conf])  # (text, visual, audio): VISUAL = 1, AUDIO = 2


def scale_projector_gradient(feats: torch.Tensor, tuner: Any, modality: int) -> torch.Tensor:
    """A projector's output ``[B, N, H]`` with its gradient scaled by the modality's reliance weight.

    Identity (no op) unless ``tuner`` is a MoSE tuner whose weights come from a reliance rule.
    """
    if tuner is None or not hasattr(tuner, "uses_reliance_weights") or not tuner.uses_reliance_weights():
        return feats
    return scale_gradient(feats, tuner.modality_weights()[modality])


@torch.no_grad()
def add_ge_noise_(grads: dict[int, list[torch.Tensor]], weights: torch.Tensor,
                  generator: torch.Generator | None = None) -> None:
    """OGM-GE's noise, in place: ``g += ε·std(g)`` on every gradient tensor of modality ``m`` in
    ``grads`` ``{m: [g, ...]}`` whose weight ``weights[m]`` is below 1; the others are left as they are
    (formula in the module doc). Masked on the device (``weights[m] < 1`` as a 0/1 factor): no host
    sync. A tensor with fewer than 2 elements has no spread and gets no noise.
    """
    for m, tensors in grads.items():
        on = (weights[m] < 1).to(torch.float32)
        for g in tensors:
            if g is None or g.numel() < 2:
                continue
            eps = torch.randn(g.shape, device=g.device, dtype=g.dtype, generator=generator)
            g.add_(eps * (g.float().std() * on).to(g.dtype))
