"""MoSE as a peft method: identity at B = 0, gates, regulariser and modality-weight gradients, round trip,
equivalence with plain LoRA."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL
from mosear.model.mose import MoSEConfig, MoSEModel
from mosear.model.mose.layer import Linear as MoSELinear

MODS = torch.tensor([[TEXT, VISUAL, VISUAL, VISUAL, AUDIO, AUDIO, TEXT, TEXT],
                     [PAD, TEXT, VISUAL, VISUAL, AUDIO, AUDIO, TEXT, TEXT]])


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def _ids():
    return torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(3))


def _run(model, ctx, **kw):
    with ctx.use(MODS):
        return model(input_ids=_ids(), attention_mask=(MODS != PAD).long(), **kw).logits


def test_registered_with_peft(base, tmp_path):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    assert PEFT_TYPE_TO_CONFIG_MAPPING["MOSE"] is MoSEConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING["MOSE"] is MoSEModel
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2))
    assert isinstance(m.base_model, MoSEModel)
    assert sum(isinstance(x, MoSELinear) for x in m.modules()) == 4  # q_proj, v_proj x 2 layers
    m.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "MOSE"


@pytest.mark.parametrize("shared", [False, True])
def test_zero_B_is_exactly_the_base_model(base, shared):
    ref = base(input_ids=_ids(), attention_mask=(MODS != PAD).long()).logits
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=3, share_experts=shared)).eval()
    with torch.no_grad():  # non-trivial gates; B stays 0
        for n, p in m.named_parameters():
            if "mose_gate" in n:
                p.normal_()
    assert torch.equal(_run(m, m.base_model.modality_context), ref)


@pytest.mark.parametrize("top_k", [None, 1, 2])
def test_gate_rows_sum_to_one(top_k):
    from mosear.model.mose.layer import ModalityGate

    gate = ModalityGate(r=6, num_experts=3, temperature=0.7, top_k=top_k, kind="softmax")
    torch.nn.init.normal_(gate.weight)
    h = torch.randn(20, 6)
    mod = torch.tensor([TEXT, VISUAL, AUDIO, PAD] * 5)
    g = gate(h, mod)
    assert g.shape == (20, 3)
    torch.testing.assert_close(g.sum(-1), torch.ones(20))
    if top_k is not None:
        assert int((g > 0).sum(-1).max()) <= top_k
    # per-modality: the same h gives different gates for different modalities
    same_h = h[:1].expand(3, 6)
    g3 = gate(same_h, torch.tensor([TEXT, VISUAL, AUDIO]))
    assert not torch.allclose(g3[0], g3[1])


def test_balance_loss_gradient_reaches_gates_not_B(base):
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=3, init_weights=False, lora_dropout=0.0))
    m.train()
    _run(m, m.base_model.modality_context)
    bal = m.base_model.balance_loss()
    assert bal is not None and bal.requires_grad and 1.0 <= float(bal.detach()) <= 3.0
    bal.backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "mose_gate" in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "mose_A" in n)
    # a layer's own B does not enter its gates; earlier layers' B do (through the hidden states), so
    # the last layer's B get no gradient from the regulariser
    last = [g for n, g in grads.items() if "mose_B" in n and "layers.1." in n]
    assert last and all(g is None or g.abs().sum() == 0 for g in last)


def test_modality_weights_scale_gradients_and_outputs(base):
    """w_m is a buffer (no gradient); the gradient reaching B through modality m scales with w_m."""
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2, init_weights=False, lora_dropout=0.0,
                                                       dynamic_weights=False))
    layer = next(x for x in m.modules() if isinstance(x, MoSELinear))
    ctx = m.base_model.modality_context
    x = torch.randn(2, 8, layer.in_features)

    def grad_B(w_audio):
        layer.mose_modality_weight["default"][AUDIO] = w_audio
        layer.zero_grad()
        with ctx.use(MODS):
            y = layer(x)
        (y * (MODS == AUDIO).unsqueeze(-1)).sum().backward()  # only audio rows
        assert layer.mose_modality_weight["default"].grad is None
        return layer.mose_B["default"].grad.clone()

    g1, g2 = grad_B(1.0), grad_B(2.0)
    assert g1.abs().sum() > 0
    torch.testing.assert_close(g2, 2 * g1)
    # only the audio expert set receives gradient from audio rows
    assert g1[:, AUDIO].abs().sum() > 0 and g1[:, VISUAL].abs().sum() == 0 and g1[:, TEXT].abs().sum() == 0


def test_dynamic_weights_turn_down_the_stronger_modality(base):
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2, init_weights=False, lora_dropout=0.0,
                                                       weight_momentum=0.0, weight_strength=1.0))
    layer = next(x for x in m.modules() if isinstance(x, MoSELinear))
    with torch.no_grad():
        layer.mose_B["default"][:, AUDIO] *= 10  # audio experts change the output 10x more
    layer.train()
    with m.base_model.modality_context.use(MODS):
        layer(torch.randn(2, 8, layer.in_features))
    w = layer.mose_modality_weight["default"]
    assert torch.equal(w, torch.ones(3))  # a forward call queues its measurement ...
    assert m.base_model.update_modality_weights() == 1  # ... applied to all layers at once
    assert float(w[AUDIO]) < 1.0 < float(w[VISUAL]) and float(w[TEXT]) == 1.0
    assert float(w.min()) >= 0.5 and float(w.max()) <= 2.0  # clipped
    layer.eval()  # no update at inference
    before = w.clone()
    with m.base_model.modality_context.use(MODS):
        layer(torch.randn(2, 8, layer.in_features))
    assert torch.equal(before, layer.mose_modality_weight["default"])


def test_adapter_round_trip_is_bit_exact(base, tmp_path):
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=3, init_weights=False, top_k=2)).eval()
    with torch.no_grad():
        for layer in m.modules():
            if isinstance(layer, MoSELinear):
                layer.mose_modality_weight["default"].copy_(torch.tensor([1.0, 1.3, 0.7]))
    ref = _run(m, m.base_model.modality_context)
    m.save_pretrained(str(tmp_path))
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    assert torch.equal(_run(loaded, loaded.base_model.modality_context), ref)
    sd1 = {k: v for k, v in m.state_dict().items() if "mose_" in k}
    sd2 = loaded.state_dict()
    assert sd1 and all(torch.equal(v, sd2[k]) for k, v in sd1.items())


def test_one_shared_expert_without_gate_equals_plain_lora(base):
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0,
                                                         target_modules=["q_proj", "v_proj"])).eval()
    mose = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, lora_alpha=16, lora_dropout=0.0, num_experts=1,
                                                          share_experts=True, gate="none",
                                                          dynamic_weights=False)).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, mod in lora.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                mod.lora_B["default"].weight.copy_(torch.randn(mod.lora_B["default"].weight.shape, generator=g))
                twin = mose.get_submodule(name)
                twin.mose_A["default"].weight.copy_(mod.lora_A["default"].weight)
                twin.mose_B["default"][:, 0, 0, :].copy_(mod.lora_B["default"].weight)
    mods = torch.tensor([[TEXT, VISUAL, VISUAL, VISUAL, AUDIO, AUDIO, TEXT, TEXT]] * 2)
    with mose.base_model.modality_context.use(mods):
        out_mose = mose(input_ids=_ids()).logits
    out_lora = lora(input_ids=_ids()).logits
    assert not torch.equal(out_lora, base(input_ids=_ids()).logits)  # the adapter does something
    assert torch.equal(out_mose, out_lora)


def test_missing_modality_ids_is_a_clear_error(base):
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4))
    with pytest.raises(RuntimeError, match="modality ids"):
        m(input_ids=_ids())


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="top_k"):
        MoSEConfig(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="gate"):
        MoSEConfig(gate="argmax")


def _reference_layer(layer, x, mods, name="default"):
    """The layer's output and balance loss computed row by row from the module docstring's formulas."""
    st = layer.settings[name]
    k, e = st["num_experts"], st["expert_sets"]
    gate = layer.mose_gate[name]
    A, B, G = layer.mose_A[name].weight, layer.mose_B[name], gate.weight
    w = layer.mose_modality_weight[name]
    xs, ms = x.reshape(-1, x.shape[-1]), mods.reshape(-1)
    rows, gates = [], []
    for xt, mt in zip(xs, ms.tolist()):
        m = TEXT if mt == PAD else mt
        h = A @ xt
        g = torch.softmax(G[m] @ h / gate.temperature, dim=0)
        if gate.top_k is not None:
            keep = torch.zeros_like(g).scatter(0, g.topk(gate.top_k).indices, 1.0)
            g = g * keep / (g * keep).sum()
        Bm = B[:, m if e > 1 else 0]  # [d_out, K, r]
        rows.append(w[m] * sum(g[j] * (Bm[:, j] @ h) for j in range(k)))
        gates.append((mt, g))
    y = layer.base_layer(x) + torch.stack(rows).view(*x.shape[:-1], -1) * layer.scaling[name]
    per_mod = []
    for m in (TEXT, VISUAL, AUDIO):
        gs = torch.stack([g for mt, g in gates if mt == m])
        f = torch.nn.functional.one_hot(gs.argmax(-1), k).double().mean(0)
        per_mod.append(k * (f * gs.mean(0)).sum())
    return y, torch.stack(per_mod).mean()


@pytest.mark.parametrize("variant", [dict(), dict(top_k=2), dict(share_experts=True, gate_temperature=0.5)])
def test_layer_and_balance_loss_match_the_formulas(base, variant):
    """Output and gradients of a MoSE layer (fused default path and the generic one) against a per-row
    computation of the documented formulas, in float64 (a wrong gradient term is off by far more)."""
    cfg = dict(r=4, num_experts=3, init_weights=False, lora_dropout=0.0, dynamic_weights=False, gate_temperature=0.7)
    m = get_peft_model(copy.deepcopy(base).double(), MoSEConfig(**{**cfg, **variant}))
    m.train()
    layer = next(x for x in m.modules() if isinstance(x, MoSELinear))
    layer.double()
    with torch.no_grad():
        layer.mose_modality_weight["default"].copy_(torch.tensor([1.0, 1.4, 0.6]))
    x = torch.randn(2, 8, layer.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    probe = torch.randn(2, 8, layer.out_features, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = [p for n, p in layer.named_parameters() if "mose_" in n]

    def loss_and_grads(y, bal):
        loss = (y * probe).sum() + 0.3 * bal
        return [loss.detach(), *torch.autograd.grad(loss, params)]

    with m.base_model.modality_context.use(MODS):
        got = loss_and_grads(layer(x), m.base_model.balance_loss())
    want = loss_and_grads(*_reference_layer(layer, x, MODS))
    # the per-modality means use float32 1/|T_m| (~1e-8 relative; with float64 ones the paths agree to 1e-15)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_bf16_autocast_training_step_matches_float32(base):
    """The fused gate/expert node runs its backward under the forward's autocast state (as the trainer's
    ``precision=bf16`` does): gradients stay float32 and agree with a float32 step to bf16 precision."""
    cfg = MoSEConfig(r=4, num_experts=3, init_weights=False, lora_dropout=0.0, dynamic_weights=False)
    m = get_peft_model(copy.deepcopy(base), cfg)
    m.train()
    params = [p for n, p in m.named_parameters() if p.requires_grad]

    def step(autocast: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = _run(m, m.base_model.modality_context)
            loss = logits.float().logsumexp(-1).mean() + 0.01 * m.base_model.balance_loss()
        return torch.autograd.grad(loss, params)

    for g32, g16 in zip(step(False), step(True)):
        assert g16.dtype == torch.float32 and torch.isfinite(g16).all()
        assert torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0) > 0.98


@pytest.mark.parametrize("variant", [dict(), dict(top_k=2)])  # the fused node and the generic path
def test_reliance_weights_scale_gradients_not_outputs(base, variant):
    """weight_rule 'ogm' / 'attention': the forward ignores w; the gradient through a row of modality m is
    w_m times the w = 1 gradient (B, gates, A), the balance loss's gradient is not scaled (float64)."""
    cfg = dict(r=4, num_experts=3, init_weights=False, lora_dropout=0.0, weight_rule="ogm", **variant)
    m = get_peft_model(copy.deepcopy(base).double(), MoSEConfig(**cfg))
    m.train()
    layer = next(x for x in m.modules() if isinstance(x, MoSELinear))
    layer.double()
    w = torch.tensor([1.0, 1.7, 0.3], dtype=torch.float64)
    m.base_model.set_modality_weights(w)
    assert all(torch.allclose(x.mose_modality_weight["default"].double(), w) for x in m.base_model.mose_layers())
    x = torch.randn(2, 8, layer.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    probe = torch.randn(2, 8, layer.out_features, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = [p for n, p in layer.named_parameters() if "mose_" in n]
    with m.base_model.modality_context.use(MODS):
        y = layer(x)
        bal = m.base_model.balance_loss()
    got = torch.autograd.grad((y * probe).sum() + 0.3 * bal, params)
    with torch.no_grad():
        layer.mose_modality_weight["default"].fill_(1.0)
    y_ref, bal_ref = _reference_layer(layer, x, MODS)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-8)  # the forward is the w = 1 forward
    row_w = w[torch.where(MODS == PAD, TEXT, MODS)].unsqueeze(-1)  # [B, L, 1]
    want = torch.autograd.grad((y_ref * probe * row_w).sum() + 0.3 * bal_ref, params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_expert_init_breaks_symmetry_and_divergence_is_measured(base):
    ref = base(input_ids=_ids(), attention_mask=(MODS != PAD).long()).logits

    def build(std):
        torch.manual_seed(5)
        return get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2, lora_dropout=0.0,
                                                              expert_init_std=std, dynamic_weights=False))

    sym, brk = build(0.0), build(0.05)
    # centred experts: with the uniform gate of the start the update is 0 (to rounding)
    torch.testing.assert_close(_run(brk.eval(), brk.base_model.modality_context), ref, rtol=0, atol=1e-5)
    assert brk.base_model.expert_divergence()["audio"] == pytest.approx(2.0)  # B_1 = -B_2: opposite
    for m in (sym, brk):
        m.train()
        logits = _run(m, m.base_model.modality_context)
        logits[:, -1, :5].sum().backward()  # the LM loss alone (the balance loss reaches the gates anyway)
    gate_grad = lambda m: sum(float(p.grad.abs().sum()) for n, p in m.named_parameters()  # noqa: E731
                              if "mose_gate" in n and p.grad is not None)
    lay_sym = next(x for x in sym.modules() if isinstance(x, MoSELinear))
    gB = lay_sym.mose_B["default"].grad  # [d_out, E, K, r]
    torch.testing.assert_close(gB[:, AUDIO, 0], gB[:, AUDIO, 1])  # B = 0: every expert the same gradient
    assert gate_grad(sym) == 0.0 and gate_grad(brk) > 0  # only broken symmetry lets the gates learn
    # the divergence formula on known experts: D_1 = 0·, identical -> 0; orthogonal equal norms -> sqrt(2)
    layer = next(x for x in brk.modules() if isinstance(x, MoSELinear))
    snap = brk.base_model.expert_snapshot()
    with torch.no_grad():
        for x in brk.base_model.mose_layers():
            B = x.mose_B["default"]
            B[:, :, 0].add_(1.0)
            B[:, :, 1].add_(1.0)
    d_same = brk.base_model.expert_divergence(snap)
    assert d_same["visual"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for i, x in enumerate(brk.base_model.mose_layers()):
            B = x.mose_B["default"]
            B.copy_(snap[str(i)])
            B[0, :, 0, 0] += 3.0
            B[1, :, 1, 0] += 3.0
    assert brk.base_model.expert_divergence(snap)["audio"] == pytest.approx(2 ** 0.5, rel=1e-5)
    assert layer.mose_B["default"].shape[2] == 2


def test_reliance_rules_match_the_formulas():
    import math

    from mosear.model.mose.reliance import attention_weights, ogm_weights, tanh_rule

    w = tanh_rule(torch.tensor(0.6), torch.tensor(0.3), alpha=0.5)  # rho = 2: visual dominates
    torch.testing.assert_close(w, torch.tensor([1.0, 1 - math.tanh(1.0), 1.0]))
    w = tanh_rule(torch.tensor(0.2), torch.tensor(0.8), alpha=0.5)  # rho = 1/4: audio dominates
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1 - math.tanh(2.0)]))
    torch.testing.assert_close(tanh_rule(torch.tensor(0.5), torch.tensor(0.5), 0.5), torch.ones(3))
    torch.testing.assert_close(ogm_weights(torch.tensor([0.0, 0.2, 0.8]), 0.5), torch.tensor([1.0, 1.0, 1 - math.tanh(2.0)]))
    # 259 visual keys hold 0.5 of the mass, 1 audio key 0.25: per key audio dominates 129.5x
    got = attention_weights(torch.tensor([0.25, 0.5, 0.25]), torch.tensor([10.0, 259.0, 1.0]), 0.1)
    torch.testing.assert_close(got, torch.tensor([1.0, 1.0, 1 - math.tanh(0.1 * 129.5)]))


def test_unimodal_scores_mask_the_other_modality(base):
    from mosear.model.mose.reliance import unimodal_scores

    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2, weight_rule="ogm")).eval()
    ctx = m.base_model.modality_context
    emb = base.get_input_embeddings()(_ids()).detach()
    mask = (MODS != PAD).long()
    pos = torch.arange(8).expand(2, -1)
    args = dict(score_pos=torch.tensor([7, 7]), target=torch.tensor([1, 3]), candidates=torch.tensor([5, 6, 7, 8]))
    s = unimodal_scores(m, ctx, emb, mask, MODS, pos, **args)
    assert s[TEXT] == 0 and 0 < s[VISUAL] < 1 and 0 < s[AUDIO] < 1
    changed = emb.clone()
    changed[MODS == AUDIO] += 5.0  # the audio rows: masked for the visual score, kept for the audio score
    s2 = unimodal_scores(m, ctx, changed, mask, MODS, pos, **args)
    assert float(s2[VISUAL]) == pytest.approx(float(s[VISUAL]), abs=1e-6)
    assert float(s2[AUDIO]) != pytest.approx(float(s[AUDIO]), abs=1e-6)


def test_projector_gradient_follows_the_reliance_weight(base):
    from mosear.model.mose.reliance import scale_projector_gradient

    feats = torch.randn(2, 3, 4, requires_grad=True)
    for rule, expect in (("ogm", 0.25), ("update", 1.0)):
        m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2, weight_rule=rule))
        m.base_model.set_modality_weights(torch.tensor([1.0, 1.0, 0.25]))
        out = scale_projector_gradient(feats, m.base_model, AUDIO)
        assert torch.equal(out, feats)
        (g,) = torch.autograd.grad(out.sum(), feats)
        torch.testing.assert_close(g, torch.full_like(feats, expect))


def test_bad_reliance_config_is_rejected():
    with pytest.raises(ValueError, match="weight_rule"):
        MoSEConfig(weight_rule="size")
    with pytest.raises(ValueError, match="init_std"):
        MoSEConfig(expert_init_std=-1.0)


# ------------------------------------------------------------------ reading never changes state
def _weights(m):
    return {n: b.clone() for n, b in m.named_buffers() if "mose_modality_weight" in n or "mose_contribution" in n}


def test_reading_statistics_changes_no_buffer_until_the_explicit_update(base, tmp_path):
    """gate_statistics(), state_dict() and save_pretrained() read; update_modality_weights() is the change."""
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2, init_weights=False, lora_dropout=0.0,
                                                       weight_momentum=0.0, weight_strength=1.0))
    m.train()
    _run(m, m.base_model.modality_context)
    _run(m, m.base_model.modality_context)  # a second training forward queues; it applies nothing either
    start = _weights(m)
    assert all(torch.equal(v, torch.ones(3)) for k, v in start.items() if "modality_weight" in k)
    stats = m.base_model.gate_statistics()
    assert stats["modality_weight/audio"] == 1.0 and "gate/audio/expert1" in stats
    m.state_dict()
    m.save_pretrained(str(tmp_path))
    assert all(torch.equal(v, start[k]) for k, v in _weights(m).items())
    assert m.base_model.update_modality_weights() == 8  # 4 layers x 2 queued forward calls, in call order
    assert any(not torch.equal(v, start[k]) for k, v in _weights(m).items() if "modality_weight" in k)
    assert m.base_model.update_modality_weights() == 0  # nothing left queued


def test_a_loop_that_never_applies_its_measurements_is_stopped(base, monkeypatch):
    from mosear.model.mose.layer import MoSEShared

    monkeypatch.setattr(MoSEShared, "MAX_PENDING", 2)
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2)).train()
    _run(m, m.base_model.modality_context)
    _run(m, m.base_model.modality_context)
    with pytest.raises(RuntimeError, match="update_modality_weights"):
        _run(m, m.base_model.modality_context)


def test_state_lives_on_the_tuner_and_the_controller_not_in_modules():
    """No module-level mutable state in MoSE or AR: each model's layers share their tuner's MoSEShared,
    and an attention module references its own controller."""
    import importlib

    from mosear.model import ar, modality

    mods = [importlib.import_module(f"mosear.model.mose.{n}") for n in ("config", "layer", "model", "reliance")]
    for mod in mods + [ar, modality]:
        state = [k for k, v in vars(mod).items() if isinstance(v, (dict, list, set)) and not k.startswith("__")
                 or type(v).__name__.startswith("Weak")]
        assert not state, f"{mod.__name__}: module-level state {state}"


def test_two_models_keep_their_own_state(base):
    from mosear.model.ar import set_attention_mode

    a = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2))
    b = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2))
    assert a.base_model.shared is not b.base_model.shared
    assert all(x.shared is a.base_model.shared for x in a.modules() if isinstance(x, MoSELinear))
    ca = set_attention_mode(a.base_model.model, "monitor", context=a.base_model.modality_context)
    cb = set_attention_mode(b.base_model.model, "ar", fraction=0.5, context=b.base_model.modality_context)
    with torch.no_grad():
        _run(a, a.base_model.modality_context)
    assert ca.shares().shape == (2, 3)
    with pytest.raises(RuntimeError, match="no attention was recorded"):
        cb.shares()  # b's controller saw none of a's calls


def test_mose_model_inherits_what_base_tuner_gives(base):
    """Only MoSE's own parts are overridden; peft's BaseTuner does matching, replacement, freezing,
    enabling/disabling and attribute forwarding (checked by behaviour below)."""
    from peft.tuners.tuners_utils import BaseTuner

    for name in ("_prepare_adapter_config", "_check_target_module_exists", "_replace_module",
                 "_mark_only_adapters_as_trainable", "enable_adapter_layers", "disable_adapter_layers",
                 "__getattr__", "state_dict"):
        assert name not in vars(MoSEModel), name
    assert set(vars(MoSEModel)) & {n for n in vars(BaseTuner) if callable(vars(BaseTuner)[n])} == {"_create_and_replace",
                                                                                                    "_pre_injection_hook"}
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2, init_weights=False,
                                                       target_modules=r".*\.v_proj"))
    assert sum(isinstance(x, MoSELinear) for x in m.modules()) == 2  # a regex target: v_proj only
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {n for n, _ in m.named_parameters() if "mose_" in n}
    ref = base(input_ids=_ids(), attention_mask=(MODS != PAD).long()).logits
    with m.disable_adapter():
        assert torch.equal(_run(m, m.base_model.modality_context), ref)
    assert not torch.equal(_run(m, m.base_model.modality_context), ref)
    assert m.base_model.config is m.base_model.model.config  # attribute forwarding to the wrapped model


def test_ge_noise_formula_only_on_the_slowed_modality():
    """OGM-GE (our reconstruction): g += eps * std(g) for the modalities whose weight is below 1; the
    others untouched; the added noise has the gradient's own spread."""
    from mosear.model.mose.reliance import add_ge_noise_

    gen = torch.Generator().manual_seed(0)
    vis, aud = torch.randn(400, 50, generator=gen) * 3.0, torch.randn(400, 50, generator=gen)
    v0, a0 = vis.clone(), aud.clone()
    add_ge_noise_({VISUAL: [vis], AUDIO: [aud]}, torch.tensor([1.0, 0.4, 1.0]), torch.Generator().manual_seed(1))
    assert torch.equal(aud, a0)  # w_audio = 1: no noise
    added = vis - v0
    assert abs(float(added.std()) / float(v0.std()) - 1.0) < 0.02 and abs(float(added.mean())) < 0.05
    same = v0.clone()
    add_ge_noise_({VISUAL: [same]}, torch.ones(3))  # nothing slowed: nothing added
    assert torch.equal(same, v0)


def test_ge_noise_lands_in_each_modalitys_expert_slice(base):
    m = get_peft_model(copy.deepcopy(base), MoSEConfig(r=4, num_experts=2, init_weights=False, lora_dropout=0.0,
                                                        weight_rule="ogm"))
    m.train()
    with m.base_model.modality_context.use(MODS):
        m(input_ids=_ids(), attention_mask=(MODS != PAD).long()).logits.pow(2).mean().backward()
    m.base_model.set_modality_weights(torch.tensor([1.0, 1.0, 0.3]))  # audio slowed
    before = {id(x): x.mose_B["default"].grad.clone() for x in m.base_model.mose_layers()}
    proj = torch.randn(6, 5)
    proj0 = proj.clone()
    m.base_model.add_ge_noise({AUDIO: [proj]}, generator=torch.Generator().manual_seed(3))
    for x in m.base_model.mose_layers():
        g, g0 = x.mose_B["default"].grad, before[id(x)]
        assert torch.equal(g[:, TEXT], g0[:, TEXT]) and torch.equal(g[:, VISUAL], g0[:, VISUAL])
        assert not torch.equal(g[:, AUDIO], g0[:, AUDIO])
    assert not torch.equal(proj, proj0)  # the extra (projector) gradient of the slowed modality too
