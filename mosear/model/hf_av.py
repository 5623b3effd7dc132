"""Audio-visual LLMs from transformers (Qwen2.5-Omni, Qwen3-Omni) as mosear models.

``build_model(ModelConfig(preset="hf-av", model_path=folder))`` loads the checkpoint folder (a thinker, or
a full Omni checkpoint whose thinker is taken; ``local_files_only``: a local folder or the local HF cache,
never the hub) and returns an :class:`AVModel`, which offers what :class:`~mosear.model.mosear_model.MoSEARModel`
offers (``collate``, ``forward`` → loss + aux, ``score_labels``, ``generate``, ``save_adapter`` /
``load_adapter``, ``modality_context``), so ``mosear eval`` and ``mosear train`` run it unchanged.

Input. Each clip goes through the model's own processor parts and chat template (:class:`AVInputs`):
``num_frames`` uniform frames as one video with the 16 kHz waveform as its sound, then the text
"The person in the video says: {transcript}. {instruction}" (the same instruction and labels as the
backbone). By default (``audio_in_video``) the video placeholder becomes the processor's audio-in-video
block: co-timed chunks of video and audio positions, and the thinker is called with
``use_audio_in_video=True`` so its TMRoPE gives both one time axis (layouts and frame times:
:mod:`mosear.model.av_layout`); ``audio_in_video: false`` passes a video part and a separate audio part.
Either way the placeholders are expanded to as many positions as the towers produce (the processor's
rule: ``prod(video_grid_thw) / merge²`` and the architecture's audio output length). Label scores are
summed or mean token log-probabilities (``label_scoring``).

Modality ids come from the placeholder token ids in the model config (``audio_token_id`` → AUDIO,
``video_token_id`` / ``image_token_id`` → VISUAL, other positions TEXT, left padding PAD), so MoSE
(peft, on the text decoder's ``q_proj``/``v_proj`` by default), the AR/monitor attention function
(registered with transformers' attention interface, set on the text decoder only) and the modality
context work as on the backbone: no patching, no hooks.

Frames without torchvision. The Qwen2-VL video processor of transformers needs torchvision, which does
not install beside the CPU torch this project pins. The frames therefore go through the processor's
PIL/numpy image backend (``Qwen2VLImageProcessorPil``: its resize rule, rescale, normalisation and patch
order) one frame at a time with a temporal patch of 1, and consecutive frames are stacked into the
video's temporal patches exactly as ``Qwen2VLVideoProcessor.patchify`` does (repeat the last frame to a
multiple of ``temporal_patch_size``). The token layout and grid equal the video processor's; pixel
values differ only by PIL's vs torchvision's bicubic resampling (measured in docs/models.md).
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from torch import nn

from mosear.labels import CANONICAL_LABELS
from mosear.model import ar
from mosear.model.av_layout import interleaved_runs, seconds_per_grid, video_times
from mosear.model.config import ModelConfig
from mosear.model.interface import DTYPES, AdapterAccess, MoSEAROutput, check_adapter_folder, model_output, seeded
from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL, ModalityContext
from mosear.model.prompt import IGNORE, _transcript

__all__ = ["AVModel", "AVInputs", "ARCHITECTURES", "build_av_model", "inspect_checkpoint", "UnsupportedModel"]


class UnsupportedModel(ValueError):
    """The folder holds a model this backend cannot run (its type is named in the message)."""


def _qwen2_5_audio_len(n: torch.Tensor, audio_cfg: Any) -> torch.Tensor:
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

    return _get_feat_extract_output_lengths(n)


def _qwen3_audio_len(n: torch.Tensor, audio_cfg: Any) -> torch.Tensor:
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import _get_feat_extract_output_lengths

    return _get_feat_extract_output_lengths(n, getattr(audio_cfg, "n_window", 50))


@dataclass(frozen=True)
class Architecture:
    """How to load one family and lay out its inputs."""

    name: str
    thinker_class: str  # transformers class of the thinker
    full_class: str | None  # class of the full checkpoint holding ``.thinker`` (None: the folder is a thinker)
    audio_tokens: Callable[[torch.Tensor, Any], torch.Tensor]  # mel frames -> LLM positions
    audio_padding: str  # WhisperFeatureExtractor padding the processor uses
    processor: str  # ``module:Class`` of the model's processor (its call-time video defaults apply)
    interleave: str  # audio-in-video order of the processor: "chunked" (Qwen2.5-Omni) or "merged" (Qwen3-Omni)
    default_fps: float  # the processor's fps when none is given (video_second_per_grid = temporal / fps)


_Q25 = "transformers.models.qwen2_5_omni.processing_qwen2_5_omni:Qwen2_5OmniProcessor"
_Q3 = "transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe:Qwen3OmniMoeProcessor"
ARCHITECTURES: dict[str, Architecture] = {
    "qwen2_5_omni_thinker": Architecture("Qwen2.5-Omni thinker", "Qwen2_5OmniThinkerForConditionalGeneration", None,
                                         _qwen2_5_audio_len, "max_length", _Q25, "chunked", 2.0),
    "qwen2_5_omni": Architecture("Qwen2.5-Omni", "Qwen2_5OmniThinkerForConditionalGeneration",
                                 "Qwen2_5OmniForConditionalGeneration", _qwen2_5_audio_len, "max_length", _Q25,
                                 "chunked", 2.0),
    "qwen3_omni_moe_thinker": Architecture("Qwen3-Omni thinker", "Qwen3OmniMoeThinkerForConditionalGeneration", None,
                                           _qwen3_audio_len, "longest", _Q3, "merged", 1.0),
    "qwen3_omni_moe": Architecture("Qwen3-Omni", "Qwen3OmniMoeThinkerForConditionalGeneration",
                                   "Qwen3OmniMoeForConditionalGeneration", _qwen3_audio_len, "longest", _Q3,
                                   "merged", 1.0),
}
# known model types this backend refuses, with the reason
_REFUSED = {
    "gemma3n": "Gemma 3n's vision tower is a timm MobileNetV5 and its processor takes images, not video; "
               "not supported by this backend yet (serve it behind an OpenAI-compatible endpoint instead)",
}
_PROCESSOR_FILES = ("tokenizer_config.json", "preprocessor_config.json")


def _resolve_folder(path: str) -> Path:
    """A local folder, or a model id in the local HF cache (never downloaded)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - the message says what to do
        raise FileNotFoundError(f"model_path {path!r}: not a folder, and not in the local HF cache "
                                f"({type(exc).__name__}); download it first (mosear never uses the hub)") from None


def inspect_checkpoint(path: str) -> tuple[Path, Architecture, dict[str, Any]]:
    """Check a checkpoint folder before anything loads: ``(folder, architecture, config.json)``.

    Raises :class:`UnsupportedModel` naming the found type and the supported ones, or
    ``FileNotFoundError`` naming a missing file.
    """
    folder = _resolve_folder(path)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a transformers checkpoint folder)")
    raw = json.loads(cfg_file.read_text())
    mtype = raw.get("model_type")
    if mtype in _REFUSED:
        raise UnsupportedModel(f"{folder}: model_type {mtype!r}: {_REFUSED[mtype]}")
    if mtype not in ARCHITECTURES:
        raise UnsupportedModel(
            f"{folder}: model_type {mtype!r} (architectures {raw.get('architectures')}) is not a supported "
            f"audio-visual LLM; supported: {', '.join(sorted(ARCHITECTURES))}")
    missing = [f for f in _PROCESSOR_FILES if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    if missing:
        raise FileNotFoundError(f"{folder}: processor file(s) missing: {', '.join(missing)} (copy the whole "
                                f"checkpoint folder, including its tokenizer and preprocessor files)")
    thinker = raw.get("thinker_config", raw)
    if not thinker.get("audio_config"):
        raise UnsupportedModel(f"{folder}: the model has no audio tower (no audio_config), so it cannot take the "
                               f"clip's audio")
    return folder, ARCHITECTURES[mtype], raw


def _chat_template(folder: Path, tokenizer: Any) -> str:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text())["chat_template"]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise FileNotFoundError(f"{folder}: no chat template (chat_template.jinja, chat_template.json or in "
                            f"tokenizer_config.json)")


class AVInputs:
    """The processor of one checkpoint: tokenizer + chat template, Whisper features, frame patching.

    ``collate`` turns reader samples into the thinker's keyword arguments plus ``modality_ids``
    (and ``labels`` when targets are given); see the module docstring for the layout.
    """

    def __init__(self, folder: Path, arch: Architecture, model_config: Any, cfg: ModelConfig) -> None:
        from transformers import AutoTokenizer, WhisperFeatureExtractor
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        kw = dict(local_files_only=True)
        self.tok = AutoTokenizer.from_pretrained(str(folder), **kw)
        self.template = _chat_template(folder, self.tok)
        self.features = WhisperFeatureExtractor.from_pretrained(str(folder), **kw)
        vcfg_file = folder / "video_preprocessor_config.json"
        vcfg = json.loads((vcfg_file if vcfg_file.is_file() else folder / "preprocessor_config.json").read_text())
        self.patch = int(vcfg.get("patch_size", 14))
        self.temporal = int(vcfg.get("temporal_patch_size", 2))
        self.merge = int(vcfg.get("merge_size", 2))
        size = dict(vcfg.get("size") or {})
        if "min_pixels" in vcfg:
            size["shortest_edge"] = vcfg["min_pixels"]
        if "max_pixels" in vcfg:
            size["longest_edge"] = vcfg["max_pixels"]
        # the processor's call-time video defaults override the video processor's saved size (as its
        # __call__ does: Qwen2.5-Omni 128..768 x 28² pixels per frame, Qwen3-Omni 128..768 x 32²)
        module, _, name = arch.processor.partition(":")
        size.update(getattr(getattr(importlib.import_module(module), name), "videos_kwargs", {}).get("size", {}))
        if cfg.frame_pixels is not None:
            size.update(shortest_edge=int(cfg.frame_pixels[0]), longest_edge=int(cfg.frame_pixels[1]))
        self.frames = Qwen2VLImageProcessorPil(
            size=size or None, patch_size=self.patch, temporal_patch_size=1, merge_size=self.merge,
            image_mean=vcfg.get("image_mean"), image_std=vcfg.get("image_std"))
        self.audio_cfg = model_config.audio_config
        self.arch = arch
        self.cfg = cfg
        self.ids = {"audio": model_config.audio_token_id, "video": model_config.video_token_id,
                    "image": model_config.image_token_id}
        self.names = {k: self.tok.convert_ids_to_tokens(v) for k, v in self.ids.items()}
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.eos_id = self.tok.eos_token_id
        self.audio_in_video = bool(cfg.audio_in_video)
        # the rope's time steps per second and (Qwen2.5-Omni) chunk length: the thinker's get_rope_index
        # replays the interleaving from these, so the placeholder order is built from the same values
        self.position_id_per_seconds = float(getattr(model_config, "position_id_per_seconds", 25))
        self.seconds_per_chunk = float(getattr(model_config, "seconds_per_chunk", 2.0))
        if self.audio_in_video:
            self.names.update(audio_bos=self._special("audio_bos_token", model_config, "audio_start_token_id"),
                              audio_eos=self._special("audio_eos_token", model_config, "audio_end_token_id"))

    def _special(self, attr: str, model_config: Any, id_field: str) -> str:
        """A special token of the audio-in-video placeholder: the tokenizer's (as the processor reads it),
        else the model config's id; a clear error when neither names it."""
        tok = getattr(self.tok, attr, None)
        if tok is None and getattr(model_config, id_field, None) is not None:
            tok = self.tok.convert_ids_to_tokens(getattr(model_config, id_field))
        if tok is None:
            raise ValueError(f"audio_in_video needs the tokenizer's {attr} (or the model config's {id_field}); "
                             f"the checkpoint has neither (set audio_in_video: false for separate parts)")
        return tok

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def frame_indices(self, n_decoded: int) -> np.ndarray:
        """The ``num_frames`` frames kept of ``n_decoded`` (uniform, first and last included)."""
        return np.linspace(0, n_decoded - 1, self.cfg.num_frames).round().astype(int)

    def video(self, frames: np.ndarray) -> tuple[torch.Tensor, list[int]]:
        """uint8 ``[T, H, W, 3]`` → ``(patches [grid_t·grid_h·grid_w, 3·temporal·patch²], [t, h, w])``."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames must be uint8 [T, H, W, 3] with T > 0, got shape {frames.shape}")
        idx = self.frame_indices(frames.shape[0])
        out = self.frames(images=[frames[i] for i in idx], return_tensors="pt")
        grids = out["image_grid_thw"]
        _, gh, gw = (int(v) for v in grids[0])
        n = gh * gw
        pix = out["pixel_values"].view(len(idx), n, 3, self.patch, self.patch)  # per frame, processor's order
        if pad := -len(idx) % self.temporal:  # the video processor repeats the last frame
            pix = torch.cat([pix, pix[-1:].expand(pad, -1, -1, -1, -1)])
        t = pix.shape[0] // self.temporal
        pix = pix.view(t, self.temporal, n, 3, self.patch, self.patch).permute(0, 2, 3, 1, 4, 5)
        return pix.reshape(t * n, 3 * self.temporal * self.patch * self.patch).contiguous(), [t, gh, gw]

    def prompt_text(self, transcript: str) -> str:
        """The rendered chat template: a video part, an audio part (separate layout only: with audio in
        video the video part carries the sound, as in the authors' conversations), then the text."""
        media = [{"type": "video"}] + ([] if self.audio_in_video else [{"type": "audio"}])
        parts = media + [{"type": "text", "text": f"The person in the video says: {transcript}. {self.cfg.instruction}"}]
        messages = ([{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else [])
        messages.append({"role": "user", "content": parts})
        return self.tok.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                            add_generation_prompt=True)

    def prompt_ids(self, transcript: str, n_video: int, n_audio: int,
                   runs: list[tuple[str, int]] | None = None) -> list[int]:
        """Token ids of one prompt with the video / audio placeholder expanded to ``n_video`` / ``n_audio``
        positions; with audio in video, the video placeholder becomes ``<audio_bos>`` + ``runs``
        (:func:`~mosear.model.av_layout.interleaved_runs`) + ``<audio_eos>``."""
        text = self.prompt_text(transcript)
        kinds = (("video", n_video),) if self.audio_in_video else (("video", n_video), ("audio", n_audio))
        for kind, n in kinds:
            tok = self.names[kind]
            if text.count(tok) != 1:
                raise ValueError(f"the chat template produced {text.count(tok)} {tok} placeholders (expected 1)")
            if self.audio_in_video:
                if runs is None or sum(c for k, c in runs if k == "video") != n_video or \
                        sum(c for k, c in runs if k == "audio") != n_audio:
                    raise ValueError(f"interleaved runs {runs} do not hold {n_video} video and {n_audio} audio positions")
                body = "".join(self.names[k] * c for k, c in runs)
                text = text.replace(tok, self.names["audio_bos"] + body + self.names["audio_eos"])
            else:
                text = text.replace(tok, tok * n)
        return self._ids(text)

    def target_ids(self, target: str) -> list[int]:
        ids = self._ids(" ".join(target.split()))[: self.cfg.max_target_tokens]
        return ids + ([self.eos_id] if self.eos_id is not None else [])

    def modality(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Modality id per position from the placeholder token ids (PAD where the mask is 0)."""
        mods = torch.full_like(input_ids, TEXT)
        mods[input_ids == self.ids["audio"]] = AUDIO
        mods[(input_ids == self.ids["video"]) | (input_ids == self.ids["image"])] = VISUAL
        return mods.masked_fill(attention_mask == 0, PAD)

    def collate(self, samples: list[dict[str, Any]], include_target: bool = True) -> dict[str, torch.Tensor]:
        """Reader samples → ``input_ids, attention_mask, modality_ids [B, L]``, ``labels`` (targets only),
        ``pixel_values_videos [ΣN, D]``, ``video_grid_thw [B, 3]``, ``video_second_per_grid [B]``,
        ``input_features [B, 128, T]``, ``feature_attention_mask [B, T]`` (left-padded prompts)."""
        if not samples:
            raise ValueError("collate needs at least one sample")
        max_n = int(self.cfg.max_audio_seconds * 16000)
        waves = []
        for s in samples:
            sr = int(s.get("sample_rate", 16000))
            if sr != 16000:
                raise ValueError(f"sample {s.get('key')}: audio must be 16 kHz, got {sr} Hz")
            w = np.asarray(s["audio"], dtype=np.float32).reshape(-1)[:max_n]
            waves.append(np.pad(w, (0, max(0, 8000 - w.size))))  # at least 0.5 s, as the backbone
        # one sample at a time (what the processor gives for a batch of one), then zero-padded: with the
        # processor's "longest" padding a sample's frame count would depend on its batch
        per = [self.features([w], sampling_rate=16000, padding=self.arch.audio_padding, return_attention_mask=True,
                             return_tensors="pt") for w in waves]
        T = max(f["input_features"].shape[-1] for f in per)
        feats = {"input_features": torch.cat([F.pad(f["input_features"], (0, T - f["input_features"].shape[-1]))
                                              for f in per])}
        fmask = torch.cat([F.pad(f["attention_mask"], (0, T - f["attention_mask"].shape[-1])) for f in per])
        n_audio = self.arch.audio_tokens(fmask.sum(-1), self.audio_cfg).tolist()
        videos = [self.video(s["frames"]) for s in samples]
        spg = torch.tensor([seconds_per_grid(s, self.frame_indices(np.asarray(s["frames"]).shape[0]), self.temporal,
                                             self.arch.default_fps) for s in samples], dtype=torch.float32)
        has_target = include_target and any(s.get("target") for s in samples)
        rows, labs = [], []
        for s, (_, grid), na, sec in zip(samples, videos, n_audio, spg):
            text = _transcript(s)
            text = self.tok.convert_tokens_to_string(self.tok.tokenize(text)[: self.cfg.max_text_tokens])
            runs = None
            if self.audio_in_video:
                runs = interleaved_runs(self.arch.interleave, video_times(grid, self.merge, sec, self.position_id_per_seconds),
                                        int(na), self.position_id_per_seconds, self.seconds_per_chunk)
            ids = self.prompt_ids(text, grid[0] * grid[1] * grid[2] // self.merge**2, int(na), runs)
            lab = [IGNORE] * len(ids)
            if has_target and s.get("target"):
                t = self.target_ids(str(s["target"]))
                ids, lab = ids + t, lab + t
            rows.append(ids)
            labs.append(lab)
        B, L = len(rows), max(len(r) for r in rows)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        labels = torch.full((B, L), IGNORE, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labs)):
            input_ids[i, L - len(r):] = torch.tensor(r)
            attn[i, L - len(r):] = 1
            labels[i, L - len(r):] = torch.tensor(lab)
        batch = {
            "input_ids": input_ids, "attention_mask": attn, "modality_ids": self.modality(input_ids, attn),
            "pixel_values_videos": torch.cat([v for v, _ in videos]),
            "video_grid_thw": torch.tensor([g for _, g in videos], dtype=torch.long),
            "video_second_per_grid": spg,
            "input_features": feats["input_features"], "feature_attention_mask": fmask,
        }
        if has_target:
            batch["labels"] = labels
        return batch


def _media_slices(batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The media tensors of the samples ``rows`` (indices, repeats allowed) of a collated batch."""
    grid = batch["video_grid_thw"]
    sizes = grid.prod(-1).tolist()
    starts = np.cumsum([0] + sizes)
    pix = batch["pixel_values_videos"]
    idx = rows.tolist()
    return {
        "pixel_values_videos": torch.cat([pix[starts[i]: starts[i + 1]] for i in idx]),
        "video_grid_thw": grid[rows], "video_second_per_grid": batch["video_second_per_grid"][rows],
        "input_features": batch["input_features"][rows],
        "feature_attention_mask": batch["feature_attention_mask"][rows],
    }


_MEDIA_KEYS = ("pixel_values_videos", "video_grid_thw", "video_second_per_grid", "input_features",
               "feature_attention_mask")


class AVModel(AdapterAccess, nn.Module):
    """A transformers audio-visual thinker (+ a MoSE or LoRA adapter) behind the MoSEARModel interface."""

    def __init__(self, cfg: ModelConfig, inputs: AVInputs, lm: nn.Module, arch: Architecture) -> None:
        super().__init__()
        self.cfg = cfg
        self.prompts = inputs
        self.tokenizer = inputs.tok
        self.lm = lm
        self.arch = arch
        self._own_context = ModalityContext()
        self.ar_controller: ar.AttentionReallocator | None = None

    @property
    def base_lm(self) -> nn.Module:
        """The thinker (with adapter layers injected, when any)."""
        return self.lm.get_base_model() if isinstance(self.lm, PeftModel) else self.lm

    @property
    def attention_module(self) -> nn.Module:
        """The text decoder: where AR / monitor attention is set (the media towers keep their own)."""
        return self.base_lm.model.language_model

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def collate(self, samples: list[dict[str, Any]], include_target: bool = True) -> dict[str, torch.Tensor]:
        return self.prompts.collate(samples, include_target=include_target)

    def _call(self, batch: dict[str, torch.Tensor], hidden_only: bool = False) -> Any:
        """The thinker (or, ``hidden_only``, its body without the LM head) on a collated batch."""
        dev = self.device
        dtype = next(self.base_lm.model.visual.parameters()).dtype
        args = {k: batch[k].to(dev) for k in ("input_ids", "attention_mask", *_MEDIA_KEYS)}
        args["input_features"] = args["input_features"].to(dtype)
        args["use_audio_in_video"] = self.prompts.audio_in_video  # the rope interleaves co-timed positions
        with self.modality_context.use(batch["modality_ids"].to(dev)):
            if hidden_only:
                return self.base_lm.model(**args, use_cache=False).last_hidden_state
            return self.base_lm(**args, use_cache=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, modality_ids: torch.Tensor,
                labels: torch.Tensor | None = None, **media: torch.Tensor) -> MoSEAROutput:
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, modality_ids=modality_ids, **media)
        logits = self._call(batch).logits
        lm_loss = None
        if labels is not None:
            lab = labels.to(logits.device)
            lm_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), lab[:, 1:].flatten(), ignore_index=IGNORE)
        return model_output(self, logits, lm_loss)

    @torch.no_grad()
    def score_labels(self, batch: dict[str, torch.Tensor], labels: tuple[str, ...] = CANONICAL_LABELS,
                     chunk: int = 16) -> torch.Tensor:
        """Score ``[B, C]`` of each label's tokens right after the prompt (the assistant turn): their summed
        log-probability (``label_scoring="sum"``: ``log p(label | prompt)``) or its mean per token
        (``"mean"``: length-normalised).

        Every (sample, label) pair is one sequence: prompt + label tokens (left-padded), run with the
        sample's media, so the thinker computes its own multimodal positions; ``chunk`` pairs per call.
        """
        if "labels" in batch and bool((batch["labels"] != IGNORE).any()):
            raise ValueError("score_labels needs prompts without targets: collate(..., include_target=False)")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        B, L = ids.shape
        cand = [self.prompts._ids(lab) for lab in labels]
        C, Lc = len(cand), max(len(c) for c in cand)
        scores = torch.empty(B * C, dtype=torch.float32)
        pairs = [(i, j) for i in range(B) for j in range(C)]
        for s in range(0, len(pairs), chunk):
            part = pairs[s: s + chunk]
            n = len(part)
            seq = torch.full((n, L + Lc), self.prompts.pad_id, dtype=torch.long)
            m = torch.zeros((n, L + Lc), dtype=torch.long)
            tgt = torch.full((n, Lc), -1, dtype=torch.long)
            for k, (i, j) in enumerate(part):
                c = torch.tensor(cand[j])
                pad = Lc - len(c)  # right-aligned: all sequences end at the last position
                seq[k, pad: pad + L], m[k, pad: pad + L] = ids[i], mask[i]
                seq[k, L + pad:], m[k, L + pad:] = c, 1
                tgt[k, pad:] = c
            rows = torch.tensor([i for i, _ in part])
            sub = {"input_ids": seq, "attention_mask": m, "modality_ids": self.prompts.modality(seq, m),
                   **_media_slices(batch, rows)}
            hidden = self._call(sub, hidden_only=True)[:, L - 1: L + Lc - 1]  # position t predicts token t + 1
            logits = self.base_lm.lm_head(hidden).float()  # only the label positions: [n, Lc, V], not [n, L, V]
            logp = torch.log_softmax(logits, dim=-1).cpu()
            tok = logp.gather(-1, tgt.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            valid = tgt >= 0
            total = (tok * valid).sum(-1)
            scores[s: s + n] = total / valid.sum(-1).clamp_min(1) if self.cfg.label_scoring == "mean" else total
        return scores.view(B, C)

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int = 48, **gen_kwargs: Any) -> list[str]:
        """Greedy (by default) generation with the KV cache; returns the decoded answers (prompt removed)."""
        if "labels" in batch and bool((batch["labels"] != IGNORE).any()):
            raise ValueError("generate needs prompts without targets: collate(..., include_target=False)")
        dev = self.device
        dtype = next(self.base_lm.model.visual.parameters()).dtype
        args = {k: batch[k].to(dev) for k in ("input_ids", "attention_mask", *_MEDIA_KEYS)}
        args["input_features"] = args["input_features"].to(dtype)
        kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.prompts.pad_id,
                  eos_token_id=self.prompts.eos_id, use_audio_in_video=self.prompts.audio_in_video)
        kw.update(gen_kwargs)
        with self.modality_context.use(batch["modality_ids"].to(dev)):
            out = self.base_lm.generate(**args, **kw)
        L = args["input_ids"].shape[1]
        return self.tokenizer.batch_decode(out[:, L:], skip_special_tokens=True)

    # ----- adapters ---------------------------------------------------------------------------------------
    def save_adapter(self, directory: str | Path) -> Path:
        """Write ``adapter/`` (peft layout) and ``model_config.json`` (no projectors: the towers are the model's)."""
        from mosear.atomic import atomic_write

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(self.lm, PeftModel):
            # the base weights are rebuilt (tiny: from the seed) or reloaded, never resized: an adapter on
            # lm_head needs no copy of the base head (peft's "auto" would save it and warn each time)
            self.lm.save_pretrained(str(d / "adapter"), save_embedding_layers=False)
        atomic_write(d / "model_config.json", json.dumps(self.cfg.model_dump(mode="json"), indent=2, sort_keys=True))
        return d

    def load_adapter(self, directory: str | Path, trainable: bool = False) -> None:
        """Load what :meth:`save_adapter` wrote; refuses an adapter saved for another model config."""
        d = check_adapter_folder(directory, self.cfg, peft=isinstance(self.lm, PeftModel))
        if isinstance(self.lm, PeftModel):
            base = self.lm.unload()
            self.lm = PeftModel.from_pretrained(base, str(d / "adapter"), is_trainable=trainable)
            _apply_attention(self, self.cfg.ar)

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)


def _apply_attention(model: AVModel, s: Any) -> ar.AttentionReallocator | None:
    """Set the text decoder's attention from ``ModelConfig.ar`` (every field, ``share`` and ``direction``
    included: a model configured ``share: token, direction: both`` runs that AR)."""
    return ar.set_attention_mode(model, s.mode, threshold=s.threshold, fraction=s.fraction, layers=s.layers,
                                 heads=s.heads, queries=s.queries, share=s.share, direction=s.direction)


def decoder_targets(thinker: nn.Module, modules: list[str]) -> list[str]:
    """Full names of the linear layers ``modules`` (by name suffix) inside the text decoder's layers: the
    audio tower's ``q_proj``/``v_proj`` are left alone. Exact names, because peft rewrites a regex for some
    MoE architectures under transformers 5 (it adapted Qwen3-Omni's audio tower too)."""
    decoder = thinker.model.language_model
    prefix = next(n for n, m in thinker.named_modules() if m is decoder) + ".layers."
    names = [n for n, m in thinker.named_modules() if n.startswith(prefix) and isinstance(m, nn.Linear)
             and any(n == t or n.endswith("." + t) for t in modules)]
    if not names:
        raise ValueError(f"no linear layer of the text decoder matches target_modules {modules}")
    return names


def _load_thinker(folder: Path, arch: Architecture, dtype: torch.dtype) -> nn.Module:
    import transformers

    kw = dict(local_files_only=True, dtype=dtype, attn_implementation="sdpa")
    if arch.full_class is None:
        return getattr(transformers, arch.thinker_class).from_pretrained(str(folder), **kw)
    # a full checkpoint (thinker + talker + vocoder): only the thinker's weights are read
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True).thinker_config
    return getattr(transformers, arch.thinker_class).from_pretrained(
        str(folder), config=config, key_mapping={r"^thinker\.": ""}, **kw)


def build_av_model(cfg: ModelConfig) -> AVModel:
    """Load the checkpoint of ``cfg.model_path`` (local files only), attach ``cfg.adapter``, freeze the rest."""
    folder, arch, _ = inspect_checkpoint(cfg.model_path)
    thinker = _load_thinker(folder, arch, DTYPES[cfg.dtype])
    thinker.requires_grad_(False)
    inputs = AVInputs(folder, arch, thinker.config, cfg)
    targets = decoder_targets(thinker, list(cfg.lora.target_modules))
    with seeded(cfg.seed):
        adapter = cfg.peft_config(target_modules=targets)
        lm = get_peft_model(thinker, adapter) if adapter is not None else thinker
    model = AVModel(cfg, inputs, lm, arch)
    _apply_attention(model, cfg.ar)
    return model


def count_parameters(model_path: str) -> dict[str, int]:
    """Parameters of the thinker in a checkpoint folder, per part, built on the meta device from its
    ``config.json`` (no weights read, no memory used): ``{"text": n, "vision": n, "audio": n, "lm_head": n,
    "total": n}``. Weights take ``total × 2`` bytes in bf16 (docs/models.md adds activations and cache)."""
    import transformers

    folder, arch, _ = inspect_checkpoint(model_path)
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    config = getattr(config, "thinker_config", config)
    with torch.device("meta"):
        thinker = getattr(transformers, arch.thinker_class)(config)
    parts = {"text": thinker.model.language_model, "vision": thinker.model.visual,
             "audio": thinker.model.audio_tower, "lm_head": thinker.lm_head}
    out = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    out["total"] = sum(p.numel() for p in thinker.parameters())
    return out


def preflight_model(model_cfg: ModelConfig) -> None:
    """For ``preset: hf-av``: check the checkpoint folder (architecture, processor files, audio tower) and
    that ``lora.target_modules`` name linear layers of the text decoder, without loading weights
    (the thinker is built on the meta device). Raises with the reason; other presets pass."""
    import transformers

    if model_cfg.preset != "hf-av":
        return
    folder, arch, _ = inspect_checkpoint(model_cfg.model_path)
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    config = getattr(config, "thinker_config", config)
    with torch.device("meta"):
        thinker = getattr(transformers, arch.thinker_class)(config)
    if model_cfg.adapter != "none":
        decoder_targets(thinker, list(model_cfg.lora.target_modules))
