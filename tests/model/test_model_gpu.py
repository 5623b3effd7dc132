"""The MoSE layers and AR attention on a CUDA device in bf16 (skipped without one: ``pytest -m gpu``)."""

from __future__ import annotations

import pytest
import torch

from mosear.model.ar import set_attention_mode
from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL, ModalityContext

pytestmark = pytest.mark.gpu


def _lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
    return LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()


def _inputs():
    mods = torch.tensor([[TEXT] + [VISUAL] * 6 + [AUDIO] * 3 + [TEXT] * 4,
                         [PAD, PAD, TEXT] + [VISUAL] * 4 + [AUDIO] * 3 + [TEXT] * 4], device="cuda")
    ids = torch.randint(3, 97, mods.shape, generator=torch.Generator().manual_seed(1)).cuda()
    return ids, mods, (mods != PAD).long()


def test_ar_on_cuda_bf16():
    lm, ctx = _lm(), ModalityContext()
    ids, mods, mask = _inputs()
    with torch.no_grad(), ctx.use(mods):
        ref = lm(input_ids=ids, attention_mask=mask).logits
        set_attention_mode(lm, "ar", fraction=0.0, context=ctx)
        assert torch.equal(lm(input_ids=ids, attention_mask=mask).logits, ref)
        ctl = set_attention_mode(lm, "ar", threshold=0.0, fraction=0.8, context=ctx)
        kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
        cached, plain = lm.generate(**kw), lm.generate(**kw, use_cache=False)
    assert torch.equal(cached, plain)
    assert ctl.shares().shape == (2, 3)


def test_mose_on_cuda_bf16():
    from peft import get_peft_model

    from mosear.model.mose import MoSEConfig

    lm = _lm()
    ids, mods, mask = _inputs()
    with torch.no_grad():
        ref = lm(input_ids=ids, attention_mask=mask).logits
    m = get_peft_model(lm, MoSEConfig(r=8, num_experts=2))
    with torch.no_grad(), m.base_model.modality_context.use(mods):
        assert torch.equal(m(input_ids=ids, attention_mask=mask).logits, ref)
    m.train()
    with m.base_model.modality_context.use(mods):
        out = m(input_ids=ids, attention_mask=mask, labels=ids)
    (out.loss + 0.01 * m.base_model.balance_loss()).backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if "mose_A" in n)
