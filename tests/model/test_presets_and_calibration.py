"""The emotion-llama preset's local loading path (on tiny saved models) and AR calibration."""

from __future__ import annotations

import pytest


def test_local_preset_loads_saved_models_only(tmp_path, real_samples):
    """Save tiny CLIP / HuBERT / LLaMA + tokenizer to folders and build the local preset from them."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, HubertConfig, HubertModel, LlamaConfig, LlamaForCausalLM

    from mosear.config import ConfigError, load_config
    from mosear.model import ModelConfig, build_model
    from mosear.model.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4)).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=28, patch_size=14)).save_pretrained(tmp_path / "vision")
    HubertModel(HubertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
                ).save_pretrained(tmp_path / "audio")
    cfg = load_config(ModelConfig, overrides={
        "preset": "emotion-llama", "llm_path": str(tmp_path / "llm"), "vision_path": str(tmp_path / "vision"),
        "audio_path": str(tmp_path / "audio"), "visual_tokens": 8, "audio_tokens": 2, "adapter": "lora",
        "lora": {"r": 4},
    })
    model = build_model(cfg).eval()
    batch = model.collate(real_samples[:2], include_target=False)
    assert batch["pixel_values"].shape[-1] == 28  # the vision tower's own input size
    assert model.score_labels(batch).shape == (2, 11)
    with pytest.raises(ConfigError, match="audio_path"):
        load_config(ModelConfig, overrides={"preset": "emotion-llama", "llm_path": "x", "vision_path": "y"})
    with pytest.raises(OSError):  # a missing local folder is not fetched from a hub
        build_model(cfg.model_copy(update={"llm_path": str(tmp_path / "nowhere")}))


def test_calibration_follows_its_rule(make_model, real_samples):
    from mosear.model.calibrate import calibrate_ar

    model = make_model(adapter="mose")
    labels = ("happy", "sad", "angry", "neutral")
    subsets = ["consistent", "video_aligned", "audio_aligned"]
    val = [(model.collate(real_samples, include_target=False), ["happy", "sad", "angry"], subsets),
           (model.collate(real_samples[::-1], include_target=False), ["sad", "neutral", "happy"], subsets)]
    res = calibrate_ar(model, val, labels, thresholds=(0.0, 0.5), fractions=(0.5, 1.0))
    assert len(res.table) == 5 and res.table[0]["fraction"] == 0.0
    chosen = next(r for r in res.table if (r["threshold"], r["fraction"]) == (res.threshold, res.fraction))
    # the consistent floor is the no-AR accuracy minus its bootstrap SE (>= 0): every kept row is at least this
    ok = [r for r in res.table if r["consistent"] >= res.table[0]["consistent"]]
    assert chosen["conflict_mean"] >= max(r["conflict_mean"] for r in ok)
    assert model.ar_controller is not None and model.ar_controller.fraction == res.fraction
    with pytest.raises(ValueError, match="audio_aligned"):
        calibrate_ar(model, [(val[0][0], val[0][1], ["consistent"] * 3)], labels)
    # AR options searched too: 'both' only at thresholds >= 0.5; the chosen variant is the one left set
    res = calibrate_ar(model, val, labels, thresholds=(0.0, 0.5), fractions=(0.5,),
                       options=[{}, {"share": "token", "direction": "both"}])
    assert [(r["threshold"], r["share"], r["direction"]) for r in res.table] == [
        (1.0, "mass", "audio"), (0.0, "mass", "audio"), (0.5, "mass", "audio"), (0.5, "token", "both")]
    ctl = model.ar_controller
    assert (ctl.share, ctl.direction) == (res.options["share"], res.options["direction"])


@pytest.mark.parametrize("rows, se, expect", [
    # a smaller |gap| bought by lowering audio-aligned accuracy is not chosen: the conflict-mean is
    ([(1, 0, .8, .2, .9), (.5, .5, .8, .2, .3), (.5, .25, .8, .5, .9)], 0.0, (.5, .25)),
    # consistent drops by more than one SE: refused, even with the best conflict-mean
    ([(1, 0, .8, .2, .9), (.5, .5, .6, .9, .9)], 0.1, (1, 0)),
    # within one SE: allowed
    ([(1, 0, .8, .2, .9), (.5, .5, .75, .9, .9)], 0.1, (.5, .5)),
    # ties: the smaller fraction, then the larger threshold
    ([(1, 0, .8, .5, .5), (.3, .5, .8, .6, .6), (.7, .5, .8, .6, .6), (.7, .25, .8, .6, .6)], 0.0, (.7, .25)),
])
def test_choose_setting_rule(rows, se, expect):
    from mosear.model.calibrate import choose_setting

    table = [dict(zip(("threshold", "fraction", "consistent", "video_aligned", "audio_aligned"), r)) for r in rows]
    best = choose_setting(table, se)
    assert (best["threshold"], best["fraction"]) == expect
