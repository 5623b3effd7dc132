"""Tiny random-init checkpoint folders of the supported audio-visual LLMs, with locally built processors.

``write_tiny_checkpoint(folder, arch)`` writes what a downloaded checkpoint folder holds, at toy sizes
and with no hub access: ``config.json`` + ``model.safetensors`` (a thinker built from its config,
random init under ``seed``), a byte-level BPE tokenizer trained in-process (``tokenizer.json``,
``tokenizer_config.json``) with the architecture's special tokens, the chat template
(``chat_template.jinja``, the same content-part layout as the released templates) and
``preprocessor_config.json`` / ``video_preprocessor_config.json`` (Whisper features with 128 mel bins,
the Qwen2-VL patching parameters). Tests and benchmarks use it; with ``sizes`` it builds larger shapes
(e.g. a 7B-shaped thinker for a GPU benchmark).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_tiny_checkpoint", "TINY_ARCHS"]

# special tokens as the released checkpoints name them (placeholders come from the model config's ids)
_TOKENS = {
    "qwen2_5_omni": {"image": "<|IMAGE|>", "video": "<|VIDEO|>", "audio": "<|AUDIO|>",
                     "vision_bos": "<|vision_bos|>", "vision_eos": "<|vision_eos|>",
                     "audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>"},
    "qwen3_omni_moe": {"image": "<|image_pad|>", "video": "<|video_pad|>", "audio": "<|audio_pad|>",
                       "vision_bos": "<|vision_start|>", "vision_eos": "<|vision_end|>",
                       "audio_bos": "<|audio_start|>", "audio_eos": "<|audio_end|>"},
}
TINY_ARCHS = tuple(_TOKENS)

# The released templates' layout of content parts (system turn, then the user's parts in order).
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}VBOS VIDEO VEOS"
    "{% elif part['type'] == 'image' %}VBOS IMAGE VEOS"
    "{% elif part['type'] == 'audio' %}ABOS AUDIO AEOS"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = (
    "happy sad neutral angry worried surprise fear contempt doubt disgust calm excited anxious "
    "The person in the video says: Kids are talking by the door. Dogs are sitting by the door. "
    "Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, "
    "surprise, fear, contempt, doubt. The face looks tense while the voice sounds calm. user assistant system "
)


def _tokenizer(folder: Path, arch: str) -> dict[str, int]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    names = _TOKENS[arch]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [names[k] for k in
                                                                 ("image", "video", "audio", "vision_bos",
                                                                  "vision_eos", "audio_bos", "audio_eos")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    template = _CHAT_TEMPLATE
    for k, v in (("VBOS ", "vision_bos"), (" VEOS", "vision_eos"), ("ABOS ", "audio_bos"), (" AEOS", "audio_eos"),
                 ("VIDEO", "video"), ("IMAGE", "image"), ("AUDIO", "audio")):
        template = template.replace(k, names[v])
    extra = {f"{k}_token": names[k] for k in ("image", "video", "audio", "vision_bos", "vision_eos", "audio_bos",
                                               "audio_eos")}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", extra_special_tokens=extra)
    fast.save_pretrained(str(folder))
    (folder / "chat_template.jinja").write_text(template)
    return {t: tok.token_to_id(t) for t in special}


def _sizes(sizes: dict[str, Any] | None) -> dict[str, Any]:
    out = {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 64, "vision_hidden": 32,
           "vision_depth": 2, "audio_d_model": 32, "audio_layers": 2, "vocab": None}
    out.update(sizes or {})
    return out


def _qwen2_5_config(ids: dict[str, int], names: dict[str, str], vocab: int, s: dict[str, Any]):
    from transformers import Qwen2_5OmniThinkerConfig

    head_dim = s["hidden"] // s["heads"]
    half = head_dim // 2
    sec = [half - 2 * (half // 4), half // 4, half // 4]
    return Qwen2_5OmniThinkerConfig(
        text_config=dict(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                         num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["kv_heads"], max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": sec},
                         tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"]),
        vision_config=dict(depth=s["vision_depth"], hidden_size=s["vision_hidden"],
                           intermediate_size=2 * s["vision_hidden"],
                           num_heads=2, out_hidden_size=s["hidden"], patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=112, fullatt_block_indexes=[s["vision_depth"] - 1]),
        audio_config=dict(num_mel_bins=128, encoder_layers=s["audio_layers"], encoder_attention_heads=2,
                          encoder_ffn_dim=2 * s["audio_d_model"], d_model=s["audio_d_model"], output_dim=s["hidden"],
                          n_window=100, max_source_positions=1500),
        audio_token_index=ids[names["audio"]], image_token_index=ids[names["image"]],
        video_token_index=ids[names["video"]], audio_start_token_id=ids[names["audio_bos"]],
        audio_end_token_id=ids[names["audio_eos"]], vision_start_token_id=ids[names["vision_bos"]],
        user_token_id=ids["<|im_start|>"], pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
    )


def _qwen3_config(ids: dict[str, int], names: dict[str, str], vocab: int, s: dict[str, Any]):
    from transformers import Qwen3OmniMoeThinkerConfig

    head_dim = s["hidden"] // s["heads"]
    half = head_dim // 2
    sec = [half - 2 * (half // 4), half // 4, half // 4]
    return Qwen3OmniMoeThinkerConfig(
        text_config=dict(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                         num_hidden_layers=s["layers"], num_attention_heads=s["heads"], head_dim=head_dim,
                         num_key_value_heads=s["kv_heads"], max_position_embeddings=4096,
                         moe_intermediate_size=s["intermediate"] // 2, num_experts=4, num_experts_per_tok=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": sec,
                                          "interleaved": True},
                         pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"]),
        vision_config=dict(depth=s["vision_depth"], hidden_size=s["vision_hidden"],
                           intermediate_size=2 * s["vision_hidden"],
                           num_heads=2, out_hidden_size=s["hidden"], patch_size=16, spatial_merge_size=2,
                           temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0]),
        audio_config=dict(num_mel_bins=128, encoder_layers=s["audio_layers"], encoder_attention_heads=2,
                          encoder_ffn_dim=2 * s["audio_d_model"], d_model=s["audio_d_model"], output_dim=s["hidden"],
                          n_window=50, n_window_infer=800, conv_chunksize=500, downsample_hidden_size=16),
        audio_token_id=ids[names["audio"]], image_token_id=ids[names["image"]], video_token_id=ids[names["video"]],
        audio_start_token_id=ids[names["audio_bos"]], vision_start_token_id=ids[names["vision_bos"]],
        user_token_id=ids["<|im_start|>"], pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        position_id_per_seconds=13,  # the released thinker's value (and its processor's); transformers' default is 25
    )


def write_tiny_checkpoint(folder: str | Path, arch: str = "qwen2_5_omni", *, seed: int = 0,
                          sizes: dict[str, Any] | None = None, dtype: str = "float32",
                          min_pixels: int = 56 * 56, max_pixels: int = 112 * 112, full: bool = False) -> Path:
    """Write a random-init thinker of ``arch`` and its processor files to ``folder``; returns it.

    ``min_pixels``/``max_pixels`` bound a resized frame (the tiny default keeps frames at 2x2..4x4 merged
    patches); ``sizes`` overrides the toy widths/depths (keys of :func:`_sizes`).
    """
    import torch
    from transformers import WhisperFeatureExtractor

    if arch not in _TOKENS:
        raise ValueError(f"unknown tiny architecture {arch!r}; one of {TINY_ARCHS}")
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    ids = _tokenizer(d, arch)
    s = _sizes(sizes)
    vocab = s["vocab"] or (max(ids.values()) + 1 + 400)  # tokenizer vocab + headroom, as real vocabularies have
    names = _TOKENS[arch]
    cfg = (_qwen2_5_config if arch == "qwen2_5_omni" else _qwen3_config)(ids, names, vocab, s)
    if arch == "qwen2_5_omni":
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration as cls
    else:
        from transformers import Qwen3OmniMoeThinkerForConditionalGeneration as cls
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    if full:
        import transformers

        name = "Qwen2_5Omni" if arch == "qwen2_5_omni" else "Qwen3OmniMoe"
        whole = getattr(transformers, f"{name}ForConditionalGeneration")(
            getattr(transformers, f"{name}Config")(thinker_config=cfg.to_dict(), enable_audio_output=False))
        whole.thinker = model
        model = whole
        (d / "spk_dict.pt").write_bytes(b"")  # the released folders ship speaker embeddings; unused here
    model.to(getattr(torch, dtype)).save_pretrained(str(d))
    WhisperFeatureExtractor(feature_size=128).save_pretrained(str(d))
    patch = 14 if arch == "qwen2_5_omni" else 16
    mean, std = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)) \
        if arch == "qwen2_5_omni" else ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    vision = {"patch_size": patch, "temporal_patch_size": 2, "merge_size": 2, "image_mean": list(mean),
              "image_std": list(std), "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
              "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "resample": 3}
    pre = json.loads((d / "preprocessor_config.json").read_text())
    pre.update(vision, image_processor_type="Qwen2VLImageProcessor")
    (d / "preprocessor_config.json").write_text(json.dumps(pre, indent=1))
    (d / "video_preprocessor_config.json").write_text(json.dumps(
        {**vision, "video_processor_type": "Qwen2VLVideoProcessor"}, indent=1))
    processor = "Qwen2_5OmniProcessor" if arch == "qwen2_5_omni" else "Qwen3OmniMoeProcessor"
    (d / "processor_config.json").write_text(json.dumps({"processor_class": processor}, indent=1))
    return d
