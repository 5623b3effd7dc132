"""AR attention: bit-exact with eager at f = 0, rows sum to 1, the audio share moves as configured,
cached generation equals the no-cache path, monitor mode changes nothing."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mosear.model.ar import AttentionReallocator, reallocate, set_attention_mode
from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL, ModalityContext

MODS = torch.tensor([[TEXT, VISUAL, VISUAL, VISUAL, VISUAL, AUDIO, AUDIO, TEXT, TEXT, TEXT],
                     [PAD, PAD, TEXT, VISUAL, VISUAL, AUDIO, AUDIO, TEXT, TEXT, TEXT]])
MASK = (MODS != PAD).long()


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


def _ids():
    return torch.randint(3, 97, MODS.shape, generator=torch.Generator().manual_seed(4))


def _forward(lm, ctx, **kw):
    with ctx.use(MODS):
        return lm(input_ids=_ids(), attention_mask=MASK, output_attentions=True, **kw)


def test_fraction_zero_and_monitor_are_bit_exact_eager(lm):
    ctx = ModalityContext()
    set_attention_mode(lm, "eager", context=ctx)
    ref = _forward(lm, ctx)
    for mode in ("ar", "monitor"):
        set_attention_mode(lm, mode, threshold=0.0, fraction=0.0, context=ctx)
        out = _forward(lm, ctx)
        assert torch.equal(out.logits, ref.logits), mode
    set_attention_mode(lm, "eager", context=ctx)


def test_rows_sum_to_one_and_audio_share_moves_by_the_fraction(lm):
    ctx = ModalityContext()
    mon = set_attention_mode(lm, "monitor", context=ctx)
    before = _forward(lm, ctx).attentions
    ctl = set_attention_mode(lm, "ar", threshold=0.0, fraction=0.4, layers=[0], heads=[1, 2], queries="all",
                             context=ctx)
    after = _forward(lm, ctx).attentions
    set_attention_mode(lm, "eager", context=ctx)
    a_keys = (MODS == AUDIO)[:, None, None, :]
    v_keys = (MODS == VISUAL)[:, None, None, :]
    valid_q = (MODS != PAD)[:, None, :]
    p0, p1 = before[0].float(), after[0].float()
    torch.testing.assert_close(p1.sum(-1)[valid_q.expand(-1, 4, -1)], torch.ones_like(p1.sum(-1)[valid_q.expand(-1, 4, -1)]))
    a0, a1 = (p0 * a_keys).sum(-1), (p1 * a_keys).sum(-1)
    v0, v1 = (p0 * v_keys).sum(-1), (p1 * v_keys).sum(-1)
    hit = (v0 > 0) & valid_q  # rows that see visual keys (threshold 0: all of them)
    for h in (1, 2):
        torch.testing.assert_close(a1[:, h][hit[:, 0]], 0.6 * a0[:, h][hit[:, 0]])
        torch.testing.assert_close(v1[:, h][hit[:, 0]], v0[:, h][hit[:, 0]] + 0.4 * a0[:, h][hit[:, 0]])
    for h in (0, 3):  # heads not chosen
        assert torch.equal(p1[:, h], p0[:, h])
    assert mon is not ctl


def test_threshold_leaves_rows_below_it_alone():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(2, 1, 6, 10, generator=g), -1)
    keys = MODS
    a = (p * (keys == AUDIO)[:, None, None]).sum(-1)
    v = (p * (keys == VISUAL)[:, None, None]).sum(-1)
    share = a / (a + v)
    mid = share.flatten().sort().values[5:7]
    tau = float(mid.mean())  # between two rows' shares: no row sits on the boundary, where rounding decides
    q = reallocate(p, keys, tau, 0.5, torch.ones(1, 1, 1, 1, dtype=torch.bool))
    a1 = (q * (keys == AUDIO)[:, None, None]).sum(-1)
    torch.testing.assert_close(a1[share <= tau], a[share <= tau])
    torch.testing.assert_close(a1[share > tau], 0.5 * a[share > tau])
    torch.testing.assert_close(q.sum(-1), p.sum(-1))


@pytest.mark.parametrize("heads", [None, [0, 3]])  # None: f folded into M in decoding steps
def test_generation_with_ar_matches_the_no_cache_path(lm, heads, monkeypatch):
    import mosear.model.ar as ar_module

    monkeypatch.setattr(ar_module, "_KEY_CAPACITY_STEP", 2)  # the key columns outgrow their capacity twice
    ctx = ModalityContext()
    set_attention_mode(lm, "ar", threshold=0.2, fraction=0.7, heads=heads, context=ctx)
    with ctx.use(MODS):
        kw = dict(input_ids=_ids(), attention_mask=MASK, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                  pad_token_id=0, return_dict_in_generate=True, output_scores=True)
        cached = lm.generate(**kw)
        plain = lm.generate(**kw, use_cache=False)
    set_attention_mode(lm, "eager", context=ctx)
    assert torch.equal(cached.sequences, plain.sequences)
    for s1, s2 in zip(cached.scores, plain.scores):
        torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-4)
    with ctx.use(MODS):  # and AR changed something
        eager = lm.generate(**kw)
    assert not all(torch.equal(a, b) for a, b in zip(eager.scores, cached.scores))


def test_monitor_shares_per_sample(lm):
    ctx = ModalityContext()
    mon = set_attention_mode(lm, "monitor", context=ctx)
    _forward(lm, ctx)
    shares = mon.shares()
    set_attention_mode(lm, "eager", context=ctx)
    assert shares.shape == (2, 3)
    torch.testing.assert_close(shares.sum(-1), torch.ones(2, dtype=torch.float64))
    assert float(shares.min()) > 0
    mon.reset()
    with pytest.raises(RuntimeError):
        mon.shares()


def test_bad_settings_are_rejected(lm):
    ctx = ModalityContext()
    with pytest.raises(ValueError, match="fraction"):
        AttentionReallocator(ctx, "ar", fraction=1.5)
    with pytest.raises(ValueError, match="layers"):
        set_attention_mode(lm, "ar", layers=[7], context=ctx)
    with pytest.raises(ValueError, match="mode"):
        set_attention_mode(lm, "flash", context=ctx)


def test_monitor_across_inference_mode_and_grad(lm):
    """The evaluation runs under torch.inference_mode(); training may monitor with gradients after it."""
    ctx = ModalityContext()
    mon = set_attention_mode(lm, "monitor", context=ctx)
    with torch.inference_mode():
        _forward(lm, ctx)
    out = _forward(lm, ctx)  # same ids object, now with autograd
    out.logits.sum().backward()
    assert mon.shares().shape == (2, 3)
    lm.zero_grad()
    set_attention_mode(lm, "eager", context=ctx)


def test_row_without_visual_mass_is_left_unchanged():
    """v = 0 (audio share 1): nothing can move, and no NaN from dividing by v; other rows still move."""
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(2, 1, 3, 10, generator=g), -1)
    no_visual = torch.ones(2, 1, 3, 1, dtype=torch.bool)
    no_visual[0, 0, 0] = False  # one ordinary row
    p = torch.where(no_visual & (MODS == VISUAL)[:, None, None], 0.0, p)
    p = p / p.sum(-1, keepdim=True)
    q = reallocate(p, MODS, 0.0, 0.9, torch.ones(1, 1, 1, 1, dtype=torch.bool))  # τ = 0: every row is hit
    assert not q.isnan().any()
    assert torch.equal(q[no_visual.expand_as(q)], p[no_visual.expand_as(p)])
    audio = MODS[0] == AUDIO
    torch.testing.assert_close(q[0, 0, 0, audio].sum(), 0.1 * p[0, 0, 0, audio].sum())


def _reference_shares(attentions, layers: list[int], heads: list[int]) -> torch.Tensor:
    """Shares ``[B, 3]`` recomputed in float64 from the probabilities each layer returned (after AR)."""
    B, L = MODS.shape
    total, count = torch.zeros(B, 3, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
    for step in attentions:  # prefill, then one entry per decoding step
        for layer in layers:
            p = step[layer].double()  # [B, H, Lq, Lk]
            H, Lq, Lk = p.shape[1:]
            keys = torch.cat([MODS, torch.full((B, Lk - L), TEXT)], dim=1)
            onehot = torch.stack([keys == TEXT, keys == VISUAL, keys == AUDIO], -1).double()  # [B, Lk, 3]
            rows = (MODS == TEXT) if Lq == L else torch.ones(B, Lq, dtype=torch.bool)  # text query rows
            chosen = torch.zeros(H, dtype=torch.bool)
            chosen[heads] = True
            w = (chosen[None, :, None] & rows[:, None, :]).double()  # [B, H, Lq]
            total += ((p @ onehot[:, None]) * w[..., None]).sum(dim=(1, 2)) / len(heads)
            count += rows.sum(1)
    return total / count[:, None]


@pytest.mark.parametrize(("mode", "heads"), [("monitor", [1, 3]), ("ar", [1, 3]), ("ar", None)])
def test_shares_after_many_decoding_steps_match_a_per_layer_reference(lm, mode, heads, monkeypatch):
    import mosear.model.ar as ar_module

    monkeypatch.setattr(ar_module, "_MAX_PENDING", 5)  # fold the records several times mid-generation
    monkeypatch.setattr(ar_module, "_KEY_CAPACITY_STEP", 4)  # 10 + 4 keys, then 10 + 8, 10 + 16, 10 + 32
    ctx = ModalityContext()
    layers = [0, 2]
    ctl = set_attention_mode(lm, mode, threshold=0.2, fraction=0.6, layers=layers, heads=heads, context=ctx)
    with ctx.use(MODS), torch.inference_mode():
        out = lm.generate(input_ids=_ids(), attention_mask=MASK, max_new_tokens=24, min_new_tokens=24,
                          do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_attentions=True)
    shares = ctl.shares()
    set_attention_mode(lm, "eager", context=ctx)
    assert len(out.attentions) == 24
    reference = _reference_shares(out.attentions, layers, heads or list(range(4)))
    torch.testing.assert_close(shares, reference, rtol=1e-5, atol=1e-6)


def test_cached_generation_of_an_expanded_batch_then_training_with_ar(lm, monkeypatch):
    """Two sequences per prompt (the ids are repeated per sample, as for num_return_sequences), decoded
    under inference_mode past the first key capacity, equal the no-cache path; then a training forward
    (autograd records p) reuses the same prompt's key columns and backpropagates."""
    import mosear.model.ar as ar_module

    monkeypatch.setattr(ar_module, "_KEY_CAPACITY_STEP", 3)
    ctx = ModalityContext()
    ctl = set_attention_mode(lm, "ar", threshold=0.2, fraction=0.7, context=ctx)
    kw = dict(input_ids=_ids().repeat_interleave(2, 0), attention_mask=MASK.repeat_interleave(2, 0),
              max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0, return_dict_in_generate=True,
              output_scores=True)
    with ctx.use(MODS), torch.inference_mode():
        cached = lm.generate(**kw)
        plain = lm.generate(**kw, use_cache=False)
    assert torch.equal(cached.sequences, plain.sequences)
    for s1, s2 in zip(cached.scores, plain.scores):
        torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-4)
    assert cached.sequences.shape[0] == 4 and ctl._keys.capacity >= MODS.shape[1] + 8
    out = _forward(lm, ctx)  # same ids object, now with autograd
    out.logits.sum().backward()
    assert all(p.grad is not None for p in lm.parameters() if p.requires_grad)
    lm.zero_grad()
    set_attention_mode(lm, "eager", context=ctx)


def _reference_options(p, keys, tau, f, share, direction):
    """AR with the token share / both directions, row by row from ar.py's docstring (float64)."""
    q = p.double().clone()
    for b in range(p.shape[0]):
        aud, vis = keys[b] == AUDIO, keys[b] == VISUAL
        na, nv = (int(aud.sum()), int(vis.sum())) if share == "token" else (1, 1)
        for h in range(p.shape[1]):
            for i in range(p.shape[2]):
                row = q[b, h, i]
                a, v = float(row[aud].sum()), float(row[vis].sum())
                s = (a / na) / (a / na + v / nv)
                if s > tau and v > 0:
                    row[vis] += f * a * row[vis] / v
                    row[aud] *= 1 - f
                elif direction == "both" and 1 - s > tau and a > 0:
                    row[aud] += f * v * row[aud] / a
                    row[vis] *= 1 - f
    return q


@pytest.mark.parametrize("share,direction", [("token", "audio"), ("mass", "both"), ("token", "both")])
def test_token_share_and_both_directions_match_the_formulas(share, direction):
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(3 * torch.randn(2, 2, 10, 10, generator=g), -1)
    tau, f = 0.6, 0.5
    got = reallocate(p, MODS, tau, f, torch.ones(1, 1, 1, 1, dtype=torch.bool), share=share, direction=direction)
    torch.testing.assert_close(got.double(), _reference_options(p, MODS, tau, f, share, direction),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(-1), p.sum(-1))  # rows keep their sums
    if direction == "both":  # some rows moved mass towards audio keys
        a0 = (p * (MODS == AUDIO)[:, None, None]).sum(-1)
        a1 = (got * (MODS == AUDIO)[:, None, None]).sum(-1)
        assert bool((a1 > a0 + 1e-4).any()) and bool((a1 < a0 - 1e-4).any())


def test_options_in_the_model_match_reallocate_and_the_monitor(lm):
    """The attention function with the options applies :func:`reallocate` to text query rows, and the
    shares it records after AR are the reallocated masses (both directions accounted)."""
    ctx = ModalityContext()
    set_attention_mode(lm, "eager", context=ctx)
    ref = _forward(lm, ctx).attentions
    ctl = set_attention_mode(lm, "ar", threshold=0.5, fraction=0.6, layers=[0], share="token", direction="both",
                             context=ctx)
    out = _forward(lm, ctx).attentions
    shares = ctl.shares()
    set_attention_mode(lm, "eager", context=ctx)
    rows = (MODS == TEXT)[:, None, :, None]
    want = reallocate(ref[0].float(), MODS, 0.5, 0.6, rows, share="token", direction="both")
    torch.testing.assert_close(out[0].float(), want, rtol=1e-5, atol=1e-6)
    # layer 0's text rows after AR, averaged over heads and rows: the recorded shares
    a_keys, v_keys = (MODS == AUDIO)[:, None, None, :], (MODS == VISUAL)[:, None, None, :]
    q = out[0].float()
    n = (MODS == TEXT).sum(1).double() * q.shape[1]
    got_v = ((q * v_keys).sum(-1) * rows.squeeze(-1)).sum((1, 2)).double() / n
    got_a = ((q * a_keys).sum(-1) * rows.squeeze(-1)).sum((1, 2)).double() / n
    torch.testing.assert_close(shares[:, 1], got_v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shares[:, 2], got_a, rtol=1e-5, atol=1e-6)


def test_bad_option_values_are_rejected():
    with pytest.raises(ValueError, match="share"):
        AttentionReallocator(ModalityContext(), "ar", share="keys")
    with pytest.raises(ValueError, match="threshold >= 0.5"):
        AttentionReallocator(ModalityContext(), "ar", threshold=0.3, direction="both")
