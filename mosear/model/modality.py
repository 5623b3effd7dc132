"""Modality ids per sequence position, and the context that carries them to MoSE layers and AR.

Every position of the LLM input sequence has a modality id (:data:`TEXT`, :data:`VISUAL`,
:data:`AUDIO`, or :data:`PAD` for left padding). The MoSE layers (inside ``q_proj``/``v_proj``) and
the AR attention function need those ids, but transformers only hands them hidden states. Instead of
forward hooks or patched ``forward`` methods, the model owns one :class:`ModalityContext`; the MoSE
layers and the AR controller hold a reference to it, and :class:`~mosear.model.mosear_model.MoSEARModel`
fills it (``with ctx.use(modality_ids): lm(...)``) before each LM call.

Cached generation. The context stores the ids of the *prompt* ``[B, L]``. A call that sees ``n``
positions gets (:meth:`ModalityContext.ids_for`):

- ``n == L``: the prompt ids (prefill, training, scoring);
- ``n > L``: the prompt ids followed by ``TEXT`` for the ``n - L`` generated tokens (generation
  without a KV cache re-runs the whole sequence);
- ``n < L``: ``TEXT`` only: with a KV cache, a call shorter than the prompt carries newly generated
  tokens, which are text.

Keys (for AR) always cover the whole sequence so far: ``key_ids(Lk)`` is the prompt ids padded with
``TEXT`` to ``Lk``. This rule holds for greedy/sampled ``generate()`` with or without a cache; it
does not cover speculative decoding or chunked prefill (not used here).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

PAD = -1
TEXT = 0
VISUAL = 1
AUDIO = 2
MODALITY_NAMES: tuple[str, ...] = ("text", "visual", "audio")  # index = modality id
NUM_MODALITIES = len(MODALITY_NAMES)

__all__ = ["PAD", "TEXT", "VISUAL", "AUDIO", "MODALITY_NAMES", "NUM_MODALITIES", "ModalityContext"]


class ModalityContext:
    """Holds the modality ids ``[B, L]`` (int64, values in ``{-1, 0, 1, 2}``) of the current prompt."""

    def __init__(self) -> None:
        self.ids: torch.Tensor | None = None

    @contextmanager
    def use(self, ids: torch.Tensor) -> Iterator[ModalityContext]:
        """Make ``ids`` (``[B, L]``) current for the duration of the block (restores the previous)."""
        if ids.dim() != 2:
            raise ValueError(f"modality ids must be [batch, length], got shape {tuple(ids.shape)}")
        prev, self.ids = self.ids, ids
        try:
            yield self
        finally:
            self.ids = prev

    def _require(self, batch: int) -> torch.Tensor:
        if self.ids is None:
            raise RuntimeError(
                "no modality ids are set: call the LM inside `with model.modality_context.use(modality_ids):` "
                "(MoSEARModel does this for forward/score_labels/generate)"
            )
        ids = self.ids
        if ids.shape[0] != batch:
            if batch % ids.shape[0]:
                raise RuntimeError(f"batch of {batch} does not match modality ids for {ids.shape[0]} samples")
            ids = ids.repeat_interleave(batch // ids.shape[0], dim=0)  # expanded batch (num_return_sequences)
        return ids

    def ids_for(self, batch: int, length: int) -> torch.Tensor:
        """Modality ids ``[batch, length]`` of the positions a call processes (rule in the module doc)."""
        ids = self._require(batch)
        L = ids.shape[1]
        if length == L:
            return ids
        if length > L:
            return torch.cat([ids, ids.new_full((ids.shape[0], length - L), TEXT)], dim=1)
        return ids.new_full((ids.shape[0], length), TEXT)

    def key_ids(self, batch: int, key_length: int) -> torch.Tensor:
        """Modality ids ``[batch, key_length]`` of all key positions (prompt, then generated text)."""
        ids = self._require(batch)
        L = ids.shape[1]
        if key_length < L:
            raise RuntimeError(f"{key_length} keys but the prompt has {L} positions")
        if key_length == L:
            return ids
        return torch.cat([ids, ids.new_full((ids.shape[0], key_length - L), TEXT)], dim=1)
