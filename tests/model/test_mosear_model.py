"""The tiny backbone end to end on real clips: modality layout, padding, cached generation, scoring,
adapter save/load."""

from __future__ import annotations


import pytest
import torch

from mosear.labels import CANONICAL_LABELS
from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL


def _layout_ok(model, batch):
    """Each row: PAD* then <s> text, N_v visual, text, N_a audio, text (then target text)."""
    for i in range(batch["modality_ids"].shape[0]):
        m = batch["modality_ids"][i].tolist()
        mask = batch["attention_mask"][i].tolist()
        n_pad = m.count(PAD)
        assert m[:n_pad] == [PAD] * n_pad and mask[:n_pad] == [0] * n_pad and all(mask[n_pad:])
        rest = m[n_pad:]
        runs = []
        for x in rest:
            if not runs or runs[-1][0] != x:
                runs.append([x, 0])
            runs[-1][1] += 1
        assert [r[0] for r in runs] == [TEXT, VISUAL, TEXT, AUDIO, TEXT]
        assert runs[1][1] == model.cfg.visual_tokens and runs[3][1] == model.cfg.audio_tokens
        if "labels" in batch:
            lab = batch["labels"][i]
            assert bool((lab[torch.tensor(m) != TEXT] == -100).all())  # targets only on text positions


@pytest.mark.parametrize("vt,at", [(16, 4), (3, 1), (1, 9)])
def test_modality_ids_match_the_layout(make_model, real_samples, vt, at):
    model = make_model(visual_tokens=vt, audio_tokens=at)
    samples = [dict(s) for s in real_samples]
    samples[0]["target"] = "happy. The voice is bright and the person smiles a lot."
    for include in (True, False):
        batch = model.collate(samples, include_target=include)
        _layout_ok(model, batch)
        assert ("labels" in batch) == include
    out = model(**model.collate(samples))
    assert out.logits.shape[:2] == model.collate(samples)["input_ids"].shape


def test_padding_and_batching_do_not_change_a_sample(make_model, real_samples, nonzero_adapter):
    model = make_model(adapter="mose")
    nonzero_adapter(model)
    alone = model.score_labels(model.collate(real_samples[1:2]))
    batched = model.score_labels(model.collate(real_samples))  # sample 1 has the shortest prompt: padded
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-4, atol=1e-4)
    assert batched.shape == (3, len(CANONICAL_LABELS))


@pytest.mark.parametrize("adapter", ["mose", "lora"])
def test_cached_generation_matches_no_cache_and_forward(make_model, real_samples, adapter, nonzero_adapter):
    """With non-zero modality-specific experts, wrong modality ids in cached steps would change tokens."""
    model = make_model(adapter=adapter, mose={"num_experts": 2})
    nonzero_adapter(model, scale=0.5)
    batch = model.collate(real_samples, include_target=False)
    cached = model.generate(batch, max_new_tokens=6)
    plain = model.generate(batch, max_new_tokens=6, use_cache=False)
    assert cached == plain
    # the first generated token is the forward pass's argmax at the last prompt position
    first = model.base_lm.generate
    out = model(**batch)
    with model.modality_context.use(batch["modality_ids"]):
        ids = first(inputs_embeds=model.embed(batch), attention_mask=batch["attention_mask"], max_new_tokens=1,
                    do_sample=False, pad_token_id=model.prompts.pad_id)
    assert torch.equal(ids[:, -1], out.logits[:, -1].argmax(-1))


def test_modality_context_rule_for_cached_steps():
    from mosear.model.modality import ModalityContext

    ctx = ModalityContext()
    ids = torch.tensor([[PAD, TEXT, VISUAL, AUDIO, TEXT]])
    with ctx.use(ids):
        assert torch.equal(ctx.ids_for(1, 5), ids)
        assert ctx.ids_for(1, 1).tolist() == [[TEXT]]  # a cached decoding step: a generated token
        assert ctx.ids_for(1, 7).tolist() == [[PAD, TEXT, VISUAL, AUDIO, TEXT, TEXT, TEXT]]
        assert ctx.key_ids(3, 6).shape == (3, 6)  # expanded batch (num_return_sequences)
    with pytest.raises(RuntimeError):
        ctx.ids_for(1, 5)


def test_training_step_loss_and_aux(make_model, real_samples):
    model = make_model(adapter="mose", mose={"num_experts": 3, "balance_loss_weight": 0.1})
    model.train()
    samples = [dict(s, target=s["meta"]["label"]) for s in real_samples]
    out = model(**model.collate(samples))
    assert out.loss is not None and out.balance_loss is not None
    torch.testing.assert_close(out.loss, out.lm_loss + 0.1 * out.balance_loss)
    assert {"lm_loss", "balance_loss"} <= set(out.aux) and all(torch.is_tensor(v) for v in out.aux.values())
    assert {"gate/audio/expert0", "modality_weight/visual"} <= set(model.adapter_statistics())  # read when logged
    out.loss.backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(("mose_" in n or "projector" in n) for n in trained)
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "mose_A" in n)


@pytest.mark.parametrize("adapter", ["mose", "lora"])
def test_save_and_load_adapter_bit_exact(make_model, real_samples, tmp_path, adapter, nonzero_adapter):
    model = make_model(adapter=adapter, seed=3)
    nonzero_adapter(model, seed=9)
    with torch.no_grad():
        model.visual.projector[0].weight.add_(0.1)
    batch = model.collate(real_samples, include_target=False)
    ref = model.score_labels(batch)
    model.save_adapter(tmp_path / "a")
    fresh = make_model(adapter=adapter, seed=3)
    assert not torch.equal(fresh.score_labels(batch), ref)
    fresh.load_adapter(tmp_path / "a")
    assert torch.equal(fresh.score_labels(batch), ref)
    other = make_model(adapter=adapter, seed=3, visual_tokens=5)
    with pytest.raises(ValueError, match="visual_tokens"):
        other.load_adapter(tmp_path / "a")


def test_ar_mode_on_the_full_model(make_model, real_samples):
    from mosear.model import set_attention_mode

    model = make_model()
    batch = model.collate(real_samples, include_target=False)
    set_attention_mode(model, "eager")
    ref = model.score_labels(batch)
    mon = set_attention_mode(model, "monitor")
    assert torch.equal(model.score_labels(batch), ref)
    before = mon.shares()
    ctl = set_attention_mode(model, "ar", threshold=0.0, fraction=0.9)
    changed = model.score_labels(batch)
    assert not torch.equal(changed, ref)
    after = ctl.shares()
    assert float(after[:, 2].mean()) < float(before[:, 2].mean())  # less attention on audio
    texts = model.generate(batch, max_new_tokens=4)
    assert len(texts) == 3


@pytest.mark.parametrize("text,label", [
    ("happy. The person smiles.", "happy"),
    ("The emotion is ANGER, clearly.", "angry"),
    ("Label: worried", "worried"),
    ("She is not happy; she looks sad.", "sad"),
    ("I think the person feels surprised and a bit afraid", "surprise"),
    ("no idea", None),
    ("", None),
    (None, None),
])
def test_parse_label(text, label):
    from mosear.model import parse_label

    assert parse_label(text) == label


def test_bad_inputs_are_clear_errors(make_model, real_samples):
    model = make_model()
    s = dict(real_samples[0], sample_rate=44100)
    with pytest.raises(ValueError, match="16 kHz"):
        model.collate([s])
    s = dict(real_samples[0], frames=real_samples[0]["frames"][..., 0])
    with pytest.raises(ValueError, match="frames"):
        model.collate([s])
    batch = model.collate([dict(real_samples[0], target="sad")])
    with pytest.raises(ValueError, match="include_target"):
        model.generate(batch)


def test_save_adapter_writes_every_file_durably(make_model, tmp_path, monkeypatch):
    """Catches: ``save_adapter`` writing ``model_config.json``, ``projectors.safetensors`` or the peft
    ``adapter/`` folder directly (no fsync: a power cut leaves an empty or half file under the final name),
    and a second save leaving files of the first one behind (the folder is replaced whole)."""
    import os

    model = make_model(adapter="lora", seed=3)
    (tmp_path / "a" / "adapter").mkdir(parents=True)
    (tmp_path / "a" / "adapter" / "stale.bin").write_text("from an earlier save")
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd))[1])
    d = model.save_adapter(tmp_path / "a")
    files = [p for p in d.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"model_config.json", "projectors.safetensors", "adapter_model.safetensors"}
    assert not (d / "adapter" / "stale.bin").exists()
    for p in files:
        assert p.stat().st_ino in synced, f"{p.relative_to(tmp_path)} was written without fsync"
    assert not [p for p in d.iterdir() if p.name.startswith(".")], "a staged temporary was left behind"
