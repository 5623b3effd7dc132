"""The transformers audio-visual backend on tiny random-init Qwen2.5-Omni and Qwen3-Omni thinkers.

Each checkpoint folder is written by the test (config + safetensors + a tokenizer trained in-process,
chat template, Whisper and Qwen2-VL preprocessor files: no hub) and loaded the way a user's
downloaded folder is (``local_files_only``). Clips are real RAVDESS samples.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mosear.model import ModelConfig, build_model, set_attention_mode
from mosear.model.av_tiny import TINY_ARCHS, write_tiny_checkpoint
from mosear.model.hf_av import UnsupportedModel, inspect_checkpoint
from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL


@pytest.fixture(scope="module", params=TINY_ARCHS)
def ckpt(request, tmp_path_factory):
    return request.param, write_tiny_checkpoint(tmp_path_factory.mktemp(request.param) / "model", request.param)


def _model(folder, **kw):
    kw.setdefault("lora", {"r": 4, "alpha": 8.0, "dropout": 0.0})
    kw.setdefault("frame_pixels", (56 * 56, 112 * 112))  # small frames keep the tests fast; default: the processor's
    m = build_model(ModelConfig(preset="hf-av", model_path=str(folder), num_frames=4, **kw))
    return m.eval()


@pytest.fixture(scope="module")
def mose(ckpt):
    return _model(ckpt[1], adapter="mose")


@pytest.fixture
def clips(real_samples):
    return [dict(s) for s in real_samples]


def _nonzero(model, seed=1, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "mose_B" in name or "lora_B" in name or "mose_gate" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_modality_ids_follow_the_placeholder_tokens(mose, clips):
    batch = mose.collate(clips + [{**clips[0], "target": "angry. The voice is loud."}])
    ids, mods, mask = batch["input_ids"], batch["modality_ids"], batch["attention_mask"]
    cfg = mose.base_lm.config
    assert torch.equal(mods == AUDIO, ids == cfg.audio_token_id)
    assert torch.equal(mods == VISUAL, (ids == cfg.video_token_id) & (mask == 1))
    assert torch.equal(mods == PAD, mask == 0) and ((mods == TEXT) | (mods == PAD)).sum() > 0
    # as many positions as the towers give: the processor's rule for video; audio from the mel frames
    merge = mose.prompts.merge
    assert (mods == VISUAL).sum(1).tolist() == (batch["video_grid_thw"].prod(-1) // merge**2).tolist()
    n_audio = mose.prompts.arch.audio_tokens(batch["feature_attention_mask"].sum(-1), cfg.audio_config)
    assert (mods == AUDIO).sum(1).tolist() == n_audio.tolist()
    # labels only on the target (and its end token); the target follows the assistant turn
    lab = batch["labels"][-1]
    assert (lab != -100).sum() == len(mose.prompts.target_ids("angry. The voice is loud."))
    # the thinker itself checks placeholder counts against its towers' outputs
    with torch.no_grad():
        out = mose(**batch)
    assert out.logits.shape[:2] == ids.shape and torch.isfinite(out.loss)


def test_ar_off_equals_eager_and_monitor_shares_sum_to_one(mose, clips):
    batch = mose.collate(clips, include_target=False)
    with torch.no_grad():
        set_attention_mode(mose, "eager")
        eager = mose(**batch).logits
        ctl = set_attention_mode(mose, "monitor")
        mon = mose(**batch).logits
        shares = ctl.shares()
        set_attention_mode(mose, "ar", fraction=0.0)
        ar0 = mose(**batch).logits
        ctl = set_attention_mode(mose, "ar", threshold=0.0, fraction=0.5)
        ctl.reset()
        mose(**batch)
        moved = ctl.shares()
        set_attention_mode(mose, "sdpa")
        sdpa = mose(**batch).logits
    assert torch.equal(mon, eager) and torch.equal(ar0, eager)
    torch.testing.assert_close(shares.sum(1), torch.ones(len(clips), dtype=torch.float64))
    assert (shares > 0).all()
    assert (moved[:, 2] < shares[:, 2]).all() and (moved[:, 1] > shares[:, 1]).all()  # AR moved audio mass
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(sdpa[valid], eager[valid], rtol=1e-4, atol=1e-4)  # the fast default: same model


def test_ar_only_on_the_text_decoder(mose):
    set_attention_mode(mose, "monitor")
    thinker = mose.base_lm
    assert thinker.model.language_model.config._attn_implementation == "mosear_ar"
    assert thinker.model.visual.config._attn_implementation == "sdpa"
    assert thinker.model.audio_tower.config._attn_implementation == "sdpa"
    set_attention_mode(mose, "sdpa")


def test_cached_generation_equals_no_cache_under_ar(mose, clips):
    batch = mose.collate(clips[:2], include_target=False)
    ctl = set_attention_mode(mose, "ar", threshold=0.3, fraction=0.5)
    cached = mose.generate(batch, max_new_tokens=4)
    ctl.reset()
    full = mose.generate(batch, max_new_tokens=4, use_cache=False)
    set_attention_mode(mose, "sdpa")
    assert cached == full and all(isinstance(t, str) for t in cached)


def test_score_labels_is_the_log_likelihood_and_batch_independent(mose, clips):
    _nonzero(mose)
    labels = ("happy", "sad", "angry")
    batch = mose.collate(clips, include_target=False)
    scores = mose.score_labels(batch, labels=labels)
    alone = mose.score_labels(mose.collate(clips[1:2], include_target=False), labels=labels)
    torch.testing.assert_close(alone[0], scores[1], rtol=1e-4, atol=1e-4)
    # the same number from a plain forward over prompt + label (the training layout without its end token)
    prompt = mose.collate(clips[:1], include_target=False)
    lab_ids = torch.tensor(mose.prompts._ids("sad"))
    full = dict(prompt)
    full["input_ids"] = torch.cat([prompt["input_ids"], lab_ids[None]], 1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    full["modality_ids"] = mose.prompts.modality(full["input_ids"], full["attention_mask"])
    with torch.no_grad():
        logp = torch.log_softmax(mose(**full).logits[0].float(), -1)
    L = prompt["input_ids"].shape[1]
    ref = sum(logp[L - 1 + t, int(tok)] for t, tok in enumerate(lab_ids))
    torch.testing.assert_close(scores[0, 1], ref, rtol=1e-4, atol=1e-4)


def test_adapters_target_only_the_text_decoder(ckpt):
    for adapter, marker in (("mose", "mose_B"), ("lora", "lora_B")):
        m = _model(ckpt[1], adapter=adapter)
        names = [n for n, p in m.lm.named_parameters() if p.requires_grad]
        assert names and all(".language_model.layers." in n for n in names)
        assert any(marker in n and "q_proj" in n for n in names) and any("v_proj" in n for n in names)
        assert not any("audio_tower" in n or "visual" in n for n in names)


def test_mose_adapter_round_trips_through_peft(ckpt, clips, tmp_path):
    m = _model(ckpt[1], adapter="mose")
    _nonzero(m)
    batch = m.collate(clips, include_target=False)
    with torch.no_grad():
        before = m(**batch).logits
    m.save_adapter(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter" / "adapter_config.json").is_file()
    fresh = _model(ckpt[1], adapter="mose")
    with torch.no_grad():
        assert not torch.equal(fresh(**batch).logits, before)
        fresh.load_adapter(tmp_path / "adapter")  # PeftModel.from_pretrained under the hood
        assert torch.equal(fresh.eval()(**batch).logits, before)
    other = _model(ckpt[1], adapter="mose", mose={"num_experts": 2})
    with pytest.raises(ValueError, match="another model config"):
        other.load_adapter(tmp_path / "adapter")


def test_full_checkpoint_folder_loads_its_thinker(ckpt, clips, tmp_path):
    """A released folder holds thinker + talker: only the thinker is read (same weights, same logits)."""
    arch, folder = ckpt
    full = write_tiny_checkpoint(tmp_path / "full", arch, full=True)
    assert json.loads((full / "config.json").read_text())["model_type"] == arch
    a, b = _model(folder, adapter="none"), _model(full, adapter="none")
    batch = a.collate(clips[:1], include_target=False)
    with torch.no_grad():
        assert torch.equal(a(**batch).logits, b(**batch).logits)


def test_training_step_moves_only_the_adapter(ckpt, clips):
    m = _model(ckpt[1], adapter="mose")
    m.train()
    batch = m.collate([{**s, "target": "sad. The face is calm."} for s in clips[:2]])
    out = m(**batch)
    out.loss.backward()
    assert "balance_loss" in out.aux and "modality_weight/audio" in m.adapter_statistics()
    grads = {n: p.grad for n, p in m.lm.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for n, p in m.lm.named_parameters() if not p.requires_grad)


# ----------------------------------------------------------------------------------------- bad input --
def test_bad_folders_fail_before_loading(ckpt, tmp_path):
    arch, folder = ckpt
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(UnsupportedModel, match="'llama'.*supported: qwen2_5_omni"):
        inspect_checkpoint(str(llama))
    gemma = tmp_path / "gemma"
    gemma.mkdir()
    (gemma / "config.json").write_text(json.dumps({"model_type": "gemma3n"}))
    with pytest.raises(UnsupportedModel, match="gemma3n.*timm"):
        inspect_checkpoint(str(gemma))
    broken = tmp_path / "no-processor"
    shutil.copytree(folder, broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        build_model(ModelConfig(preset="hf-av", model_path=str(broken)))
    deaf = tmp_path / "no-audio"
    shutil.copytree(folder, deaf)
    raw = json.loads((deaf / "config.json").read_text())
    raw.pop("audio_config")
    (deaf / "config.json").write_text(json.dumps(raw))
    with pytest.raises(UnsupportedModel, match="no audio tower"):
        inspect_checkpoint(str(deaf))
    with pytest.raises(FileNotFoundError, match="not in the local HF cache"):
        inspect_checkpoint("nobody/no-such-model")


def test_inputs_equal_the_model_processor(ckpt, clips):
    """Our torchvision-free input path against the model's own processor (needs torchvision: run in an
    environment that has it, e.g. torch 2.14.1 + torchvision 0.29.1; docs/models.md has the numbers)."""
    pytest.importorskip("torchvision")
    from transformers import AutoProcessor

    m = _model(ckpt[1], adapter="none", frame_pixels=None)
    proc = AutoProcessor.from_pretrained(str(ckpt[1]), local_files_only=True, chat_template=m.prompts.template)
    s = clips[0]
    ours = m.collate([s], include_target=False)
    idx = np.linspace(0, len(s["frames"]) - 1, 4).round().astype(int)
    ref = proc(text=[m.prompts.prompt_text(s["meta"]["transcript"])], videos=[list(s["frames"][idx])],
               audio=[np.pad(s["audio"], (0, max(0, 8000 - len(s["audio"]))))], return_tensors="pt",
               videos_kwargs={"do_sample_frames": False, "cap_pixels_per_frame": False})
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["video_grid_thw"], ref["video_grid_thw"])
    torch.testing.assert_close(ours["input_features"], ref["input_features"])
    assert (ours["pixel_values_videos"] - ref["pixel_values_videos"]).abs().max() < 0.05  # PIL vs torchvision bicubic
