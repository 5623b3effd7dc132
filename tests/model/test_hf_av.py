"""The transformers audio-visual backend on tiny random-init Qwen2.5-Omni and Qwen3-Omni thinkers.

Each checkpoint folder is written by the test (config + safetensors + a tokenizer trained in-process,
chat template, Whisper and Qwen2-VL preprocessor files: no hub) and loaded the way a user's
downloaded folder is (``local_files_only``). Clips are real RAVDESS samples. The default layout is audio
in video (interleaved, co-timed); tests marked with the ``layout`` fixture also run the separate layout.
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

LAYOUTS = {"interleaved": True, "separate": False}  # ModelConfig.audio_in_video


@pytest.fixture(scope="module", params=TINY_ARCHS)
def ckpt(request, tmp_path_factory):
    return request.param, write_tiny_checkpoint(tmp_path_factory.mktemp(request.param) / "model", request.param)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def mose_any(request, ckpt):
    """A MoSE model in each layout (audio in video, separate parts)."""
    return request.param, _model(ckpt[1], adapter="mose", audio_in_video=LAYOUTS[request.param])


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


def test_modality_ids_follow_the_placeholder_tokens(mose_any, clips):
    """Modality ids match the placeholder tokens in both layouts, with as many positions as the towers
    give (a layout that miscounts makes the thinker's own placeholder check fail)."""
    _, mose = mose_any
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


def test_ar_off_equals_eager_and_monitor_shares_sum_to_one(mose_any, clips):
    """Monitor and AR in both layouts: f = 0 is eager, shares sum to 1, AR moves audio mass to video."""
    _, mose = mose_any
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
    separate = _model(ckpt[1], adapter="mose", audio_in_video=False)  # trained in the other layout
    with pytest.raises(ValueError, match="audio_in_video"):
        separate.load_adapter(tmp_path / "adapter")


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


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_inputs_equal_the_model_processor(ckpt, clips, layout):
    """Our torchvision-free input path against the model's own processor, in both layouts (audio in video:
    the processor loads the clip's audio as the video's, ``load_audio_from_video``, with the fps our frame
    times give). Needs torchvision: run in an environment that has it, e.g. torch 2.14.1 + torchvision
    0.29.1; docs/models.md has the numbers."""
    pytest.importorskip("torchvision")
    from transformers import AutoProcessor

    from mosear.model.prompt import _transcript

    m = _model(ckpt[1], adapter="none", frame_pixels=None, audio_in_video=LAYOUTS[layout])
    proc = AutoProcessor.from_pretrained(str(ckpt[1]), local_files_only=True, chat_template=m.prompts.template)
    s = clips[0]
    ours = m.collate([s], include_target=False)
    idx = np.linspace(0, len(s["frames"]) - 1, 4).round().astype(int)
    wave = np.pad(s["audio"], (0, max(0, 8000 - len(s["audio"]))))
    fps = m.prompts.temporal / float(ours["video_second_per_grid"][0])
    kw = dict(audio=[wave], audio_from_video_indices=[0], load_audio_from_video=True) if LAYOUTS[layout] \
        else dict(audio=[wave])
    ref = proc(text=[m.prompts.prompt_text(_transcript(s))], videos=[list(s["frames"][idx])], return_tensors="pt",
               videos_kwargs={"do_sample_frames": False, "cap_pixels_per_frame": False, "fps": fps}, **kw)
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["video_grid_thw"], ref["video_grid_thw"])
    torch.testing.assert_close(ours["video_second_per_grid"], torch.as_tensor(ref["video_second_per_grid"]).float())
    torch.testing.assert_close(ours["input_features"], ref["input_features"])
    assert (ours["pixel_values_videos"] - ref["pixel_values_videos"]).abs().max() < 0.05  # PIL vs torchvision bicubic


# ------------------------------------------------------------------------------- audio in video (TMRoPE) --
def _library_placeholder(arch, model, grid, second_per_grid, n_audio):
    """The audio-in-video placeholder string as the model's own processor writes it
    (``replace_video_with_audio_token``; the processor object is built bare because its video processor
    needs torchvision, and this method reads only the tokens and the merge size)."""
    from types import SimpleNamespace

    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import Qwen3OmniMoeProcessor

    cls = Qwen2_5OmniProcessor if arch == "qwen2_5_omni" else Qwen3OmniMoeProcessor
    tok = model.tokenizer
    proc = object.__new__(cls)
    proc.__dict__.update(video_processor=SimpleNamespace(merge_size=model.prompts.merge),
                         audio_bos_token=tok.audio_bos_token, audio_eos_token=tok.audio_eos_token,
                         video_token=model.prompts.names["video"], audio_token=model.prompts.names["audio"])
    cfg = model.base_lm.config
    return proc.replace_video_with_audio_token(
        {"video_grid_thw": [np.asarray(grid)], "video_second_per_grid": [float(second_per_grid)]}, 0,
        {"num_audio_tokens": [int(n_audio)]}, 0, position_id_per_seconds=cfg.position_id_per_seconds,
        seconds_per_chunk=getattr(cfg, "seconds_per_chunk", 2.0))


def test_audio_in_video_is_laid_out_and_roped_as_the_model_does(ckpt, mose, clips):
    """Interleaved layout against the library: our ids equal the processor's audio-in-video placeholder,
    and the positions the thinker really uses (forward and generation) equal its get_rope_index with
    use_audio_in_video=True on those ids, so audio and video share one time axis. Catches the separate
    layout (audio roped after all video: 5-30 video, 33-57 audio) and a flag left off in forward/generate."""
    from mosear.model.prompt import _transcript

    arch, _ = ckpt
    batch = mose.collate(clips, include_target=False)
    p = mose.prompts
    cfg = mose.base_lm.config
    lib_rows = []
    for i, s in enumerate(clips):
        grid = batch["video_grid_thw"][i].tolist()
        n_audio = int(p.arch.audio_tokens(batch["feature_attention_mask"][i].sum(-1), cfg.audio_config))
        text = p.prompt_text(p.tok.convert_tokens_to_string(p.tok.tokenize(_transcript(s))[: p.cfg.max_text_tokens]))
        assert text.count(p.names["audio"]) == 0 and text.count(p.names["video"]) == 1  # one video part, no audio part
        lib = text.replace(p.names["video"], _library_placeholder(arch, mose, grid, batch["video_second_per_grid"][i],
                                                                  n_audio))
        lib_rows.append(p._ids(lib))
        ours = batch["input_ids"][i][batch["attention_mask"][i] == 1].tolist()
        assert ours == lib_rows[-1], f"clip {i}: our audio-in-video ids differ from the processor's"
        mods = batch["modality_ids"][i][batch["attention_mask"][i] == 1]
        seq = mods[(mods == VISUAL) | (mods == AUDIO)].tolist()
        assert seq.count(AUDIO) == n_audio and seq.count(VISUAL) == int(np.prod(grid)) // p.merge**2
    # the library's rope index on the library's ids
    ref, _ = mose.base_lm.model.get_rope_index(
        batch["input_ids"], None, batch["video_grid_thw"], batch["attention_mask"], True,
        batch["feature_attention_mask"].sum(-1), batch["video_second_per_grid"])
    seen = []
    hook = mose.base_lm.model.language_model.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(kw["position_ids"]), with_kwargs=True)
    try:
        with torch.no_grad():
            mose(**batch)
        mose.generate(batch, max_new_tokens=1)
    finally:
        hook.remove()
    valid = batch["attention_mask"] == 1
    for pos in (seen[0], seen[1][-3:]):  # forward: [3, B, L]; generation's prefill: [text; 3 rope rows]
        assert torch.equal(pos[:, valid].float(), ref[:, valid].float())
    # co-timed: audio positions start where the video's do (the separate layout starts them after it)
    mods = batch["modality_ids"]
    for i in range(len(clips)):
        t = ref[0, i]
        assert t[mods[i] == AUDIO].min() <= t[mods[i] == VISUAL].max()
        assert t[mods[i] == AUDIO].min() == t[mods[i] == VISUAL].min()  # both start at the clip's time 0


def test_separate_layout_ropes_audio_after_video(ckpt, clips):
    """The option audio_in_video=false keeps the separate parts: the library's rope puts every audio
    position after the video (what the backend did before; catches the option being ignored)."""
    m = _model(ckpt[1], adapter="none", audio_in_video=False)
    batch = m.collate(clips[:1], include_target=False)
    text = m.prompts.prompt_text("x")
    assert text.count(m.prompts.names["audio"]) == 1  # an audio part of its own
    ref, _ = m.base_lm.model.get_rope_index(
        batch["input_ids"], None, batch["video_grid_thw"], batch["attention_mask"], False,
        batch["feature_attention_mask"].sum(-1), batch["video_second_per_grid"])
    t, mods = ref[0, 0], batch["modality_ids"][0]
    assert t[mods == AUDIO].min() > t[mods == VISUAL].max()


def test_video_seconds_per_grid_come_from_the_frame_times(clips):
    """The rope's video time is the frames' real time: temporal patch x mean spacing of the kept frames
    (``meta.frame_times_s``, else the audio duration). Catches a fixed 2 fps stamped on any clip, which
    puts 4 frames of a 3 s clip in its first 2 s and breaks the co-timing with the audio."""
    from mosear.model.av_layout import seconds_per_grid

    s = {"frames": np.zeros((8, 4, 4, 3), np.uint8), "audio": np.zeros(32000, np.float32),
         "meta": {"frame_times_s": [0.1 + 0.3 * i for i in range(8)]}}
    idx = np.linspace(0, 7, 4).round().astype(int)  # 0, 2, 5, 7
    assert seconds_per_grid(s, idx, 2, 2.0) == pytest.approx(2 * (0.3 * 7) / 3)
    no_times = {**s, "meta": {}}  # 8 frames over 2 s of audio: 0.25 s apart
    assert seconds_per_grid(no_times, idx, 2, 2.0) == pytest.approx(2 * 0.25 * 7 / 3)
    one = {**no_times, "audio": np.zeros(0, np.float32)}
    assert seconds_per_grid(one, idx, 2, 2.0) == pytest.approx(1.0)  # the processor's default fps


def _attention_of_layer0(model, batch):
    """Attention probabilities ``[B, H, L, L]`` of the text decoder's first layer (a forward hook)."""
    out = []
    hook = model.base_lm.model.language_model.layers[0].self_attn.register_forward_hook(
        lambda mod, args, o: out.append(o[1].detach().clone()))
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        hook.remove()
    return out[0].double()


@pytest.mark.parametrize("share,direction", [("mass", "audio"), ("token", "both")])
def test_ar_moves_mass_only_between_audio_and_video_keys(mose, clips, share, direction):
    """In the interleaved layout (audio and video keys alternate), AR in layer 0 changes text query rows
    only, on audio and video keys only, keeps row sums, and moves exactly f·a (audio -> video) or f·v
    (video -> audio, direction both) per row. Catches keys picked by position range instead of modality."""
    batch = mose.collate(clips[:2], include_target=False)
    set_attention_mode(mose, "eager")
    before = _attention_of_layer0(mose, batch)
    f = 0.5
    set_attention_mode(mose, "ar", threshold=0.5, fraction=f, layers=[0], share=share, direction=direction)
    after = _attention_of_layer0(mose, batch)
    set_attention_mode(mose, "sdpa")
    mods = batch["modality_ids"]
    key = mods[:, None, None, :]
    diff = after - before
    assert diff.masked_fill(key == AUDIO, 0).masked_fill(key == VISUAL, 0).abs().max() == 0  # text/pad keys
    not_text = (mods != TEXT)[:, None, :, None]
    assert diff.masked_fill(~not_text, 0).abs().max() == 0  # only text query rows change
    torch.testing.assert_close(after.sum(-1), before.sum(-1), atol=1e-6, rtol=1e-6)
    a = (before * (key == AUDIO)).sum(-1)
    v = (before * (key == VISUAL)).sum(-1)
    da = (diff * (key == AUDIO)).sum(-1)
    text_rows = (mods == TEXT)[:, None, :].expand_as(a)
    if share == "mass":
        hit = text_rows & (a / (a + v) > 0.5)
        torch.testing.assert_close(da[hit], -f * a[hit], atol=1e-6, rtol=1e-6)
        assert hit.any() and (da[text_rows & ~hit] == 0).all()
    else:  # per-key shares; rows lose audio or video mass, whichever dominates per key
        na, nv = (mods == AUDIO).sum(1)[:, None, None], (mods == VISUAL).sum(1)[:, None, None]
        s = (a / na) / (a / na + v / nv)
        up, down = text_rows & (s > 0.5), text_rows & (1 - s > 0.5)
        torch.testing.assert_close(da[up], -f * a[up], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(da[down], f * v[down], atol=1e-6, rtol=1e-6)
        assert (up | down).any()


def test_config_share_and_direction_reach_the_attention(ckpt, clips, tmp_path):
    """A model configured ar: {share: token, direction: both} runs that AR (built, and after loading an
    adapter). Catches _apply_attention dropping both fields (the model then behaved as mass/audio)."""
    ar_cfg = {"mode": "ar", "threshold": 0.5, "fraction": 0.5, "share": "token", "direction": "both"}
    m = _model(ckpt[1], adapter="lora", ar=ar_cfg)
    assert (m.ar_controller.share, m.ar_controller.direction) == ("token", "both")
    batch = m.collate(clips[:1], include_target=False)
    with torch.no_grad():
        configured = m(**batch).logits
        set_attention_mode(m, "ar", threshold=0.5, fraction=0.5, share="token", direction="both")
        assert torch.equal(m(**batch).logits, configured)
        set_attention_mode(m, "ar", threshold=0.5, fraction=0.5)  # mass / audio: a different model
        assert not torch.equal(m(**batch).logits, configured)
    m.save_adapter(tmp_path / "a")
    m.load_adapter(tmp_path / "a")
    assert (m.ar_controller.share, m.ar_controller.direction) == ("token", "both")


# ------------------------------------------------------------------------------------- label scoring --
def _check_mean_scoring(build, clips):
    labels = ("happy", "bewildered", "elated joy", "sad")  # words outside the tiny vocabulary: several tokens
    total, mean = build(), build(label_scoring="mean")
    assert (total.label_scoring, mean.label_scoring) == ("sum", "mean")
    batch = total.collate(clips[:1], include_target=False)
    ids = total._label_ids(labels) if hasattr(total, "_label_ids") else [total.prompts._ids(x) for x in labels]
    n_tok = torch.tensor([len(x) for x in ids], dtype=torch.float32)
    assert len(set(n_tok.tolist())) > 1  # labels of different lengths, or the test proves nothing
    s, m = total.score_labels(batch, labels=labels), mean.score_labels(batch, labels=labels)
    torch.testing.assert_close(m, s / n_tok, rtol=1e-5, atol=1e-5)


def test_label_scoring_mean_is_the_mean_token_log_probability(ckpt, clips):
    """label_scoring: mean divides each label's summed log-probability by its token count, and the model
    says which it used. Catches the option being ignored (summed scores under 'mean')."""
    _check_mean_scoring(lambda **kw: _model(ckpt[1], adapter="none", **kw), clips)


def test_backbone_honours_label_scoring_too(clips, make_model):
    """The same config field on the tiny backbone (MoSEARModel): catches one backend ignoring it."""
    _check_mean_scoring(lambda **kw: make_model(adapter="lora", **kw), clips)
