"""``MoSEARModel``: encoders + projectors + a transformers causal LM with MoSE (or LoRA) adapters.

``build_model(cfg)`` assembles it; the LM call always runs inside ``with self.modality_context.use(ids)``
so that MoSE layers and AR know each position's modality (see :mod:`mosear.model.modality`).

What a saved adapter folder holds (:meth:`MoSEARModel.save_adapter`):
``adapter/`` (peft ``save_pretrained`` layout: ``adapter_config.json`` + ``adapter_model.safetensors``),
``projectors.safetensors`` (the visual and audio projectors) and ``model_config.json`` (the
:class:`ModelConfig`; loading refuses an adapter built for another config).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from torch import nn

from mosear.labels import CANONICAL_LABELS
from mosear.model import ar
from mosear.model.config import ModelConfig
from mosear.model.encoders import CLIP_MEAN, CLIP_STD, AudioEncoder, VisualEncoder
from mosear.model.interface import DTYPES, AdapterAccess, MoSEAROutput, check_adapter_folder, model_output, seeded
from mosear.model.modality import AUDIO, PAD, TEXT, VISUAL, ModalityContext
from mosear.model.mose import reliance
from mosear.model.prompt import IGNORE, PromptBuilder

__all__ = ["MoSEARModel", "MoSEAROutput", "build_model"]


class MoSEARModel(AdapterAccess, nn.Module):
    def __init__(self, cfg: ModelConfig, tokenizer: Any, lm: nn.Module, visual: VisualEncoder, audio: AudioEncoder,
                 image_size: int, image_mean: tuple[float, ...], image_std: tuple[float, ...]) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.lm = lm
        self.visual = visual
        self.audio = audio
        self._own_context = ModalityContext()
        self.ar_controller: ar.AttentionReallocator | None = None
        self.prompts = PromptBuilder(
            tokenizer, visual_tokens=cfg.visual_tokens, audio_tokens=cfg.audio_tokens, num_frames=cfg.num_frames,
            image_size=image_size, image_mean=image_mean, image_std=image_std, instruction=cfg.instruction,
            max_text_tokens=cfg.max_text_tokens, max_target_tokens=cfg.max_target_tokens,
            max_audio_samples=int(cfg.max_audio_seconds * 16000),
            inputs=cfg.inputs, feature_dims=(cfg.visual_feature_dim, cfg.audio_feature_dim),
        )

    def train(self, mode: bool = True) -> "MoSEARModel":
        """Train mode for the LM adapters and projectors; the frozen encoder towers stay in eval mode."""
        super().train(mode)
        for enc in (self.visual, self.audio):
            if enc.tower is not None:  # feature inputs have no tower
                enc.tower.eval()
        return self

    # ----- plumbing -------------------------------------------------------------------------------------
    @property
    def base_lm(self) -> nn.Module:
        """The transformers causal LM (with adapter layers injected, when any)."""
        return self.lm.get_base_model() if isinstance(self.lm, PeftModel) else self.lm

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def collate(self, samples: list[dict[str, Any]], include_target: bool = True) -> dict[str, torch.Tensor]:
        """Reader-style samples (+ optional ``"target"``, ``"transcript"``) -> batch; see :class:`PromptBuilder`."""
        return self.prompts.collate(samples, include_target=include_target)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``inputs_embeds`` [B, L, H]: token embeddings with visual/audio positions filled by the projectors."""
        dev = self.device
        ids = batch["input_ids"].to(dev)
        mods = batch["modality_ids"].to(dev)
        emb = self.base_lm.get_input_embeddings()(ids)
        if self.cfg.inputs == "features":  # precomputed features through their projectors
            vis = self.visual(batch["visual_features"].to(dev))  # [B, N_v, H]
            aud = self.audio(batch["audio_features"].to(dev))  # [B, N_a, H]
        else:
            vis = self.visual(batch["pixel_values"].to(dev))  # [B, N_v, H]
            aud = self.audio(batch["audio_values"].to(dev), batch["audio_lengths"])  # [B, N_a, H]
        if self.cfg.adapter == "mose" and self.cfg.mose.scale_projectors:  # reliance weights reach the projectors
            vis = reliance.scale_projector_gradient(vis, self.mose, VISUAL)
            aud = reliance.scale_projector_gradient(aud, self.mose, AUDIO)
        for m, feats in ((VISUAL, vis), (AUDIO, aud)):
            mask = mods == m
            counts = mask.sum(1)
            if not bool((counts == feats.shape[1]).all()):
                raise ValueError(f"modality {m}: prompt has {counts.tolist()} positions, encoder gave {feats.shape[1]}")
            emb = emb.masked_scatter(mask.unsqueeze(-1), feats.to(emb.dtype))
        return emb

    @staticmethod
    def positions(attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids as ``generate()`` computes them: ``cumsum(mask) - 1``, 0 on padding."""
        pos = attention_mask.long().cumsum(-1) - 1
        return pos.masked_fill(attention_mask == 0, 0)

    # ----- training / scoring / generation ----------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, modality_ids: torch.Tensor,
                pixel_values: torch.Tensor | None = None, audio_values: torch.Tensor | None = None,
                audio_lengths: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                visual_features: torch.Tensor | None = None, audio_features: torch.Tensor | None = None) -> MoSEAROutput:
        """Media inputs are ``pixel_values, audio_values, audio_lengths`` (``inputs=media``) or
        ``visual_features, audio_features`` [B, N, D] (``inputs=features``)."""
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, modality_ids=modality_ids,
                     pixel_values=pixel_values, audio_values=audio_values, audio_lengths=audio_lengths,
                     visual_features=visual_features, audio_features=audio_features)
        dev = self.device
        emb = self.embed(batch)
        mask = attention_mask.to(dev)
        with self.modality_context.use(modality_ids.to(dev)):
            out = self.base_lm(inputs_embeds=emb, attention_mask=mask, position_ids=self.positions(mask),
                               use_cache=False)
        logits = out.logits
        lm_loss = None
        if labels is not None:
            lab = labels.to(dev)
            lm_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), lab[:, 1:].flatten(), ignore_index=IGNORE)
        return model_output(self, logits, lm_loss)

    def modality_gradients(self) -> dict[int, list[torch.Tensor]]:
        """The projectors' gradients by modality (the trainable parameters of the visual / audio encoder:
        the towers are frozen), for OGM-GE's noise (:meth:`apply_gradient_noise`)."""
        return {m: [p.grad for p in enc.parameters() if p.requires_grad and p.grad is not None]
                for m, enc in ((VISUAL, self.visual), (AUDIO, self.audio))}

    @torch.no_grad()
    def measure_reliance(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Set the MoSE modality weights from how much this training batch's answers rely on each modality
        (``mose.weight_rule`` 'ogm' / 'attention', formulas in :mod:`mosear.model.mose.reliance`). Returns
        the weights ``[M]`` (on the device, no host sync), or None when the adapter has no reliance rule.

        The answer is each sample's first target token (``labels`` [B, L]; the logits one position before
        it predict it, softmax over the vocabulary). 'ogm': one no-gradient forward over the batch twice,
        audio masked / visual masked; 'attention': one no-gradient forward in monitor mode (the text
        queries' attention share per key of each modality), then ``cfg.ar``'s attention is put back.
        Runs in eval mode (no dropout, no random numbers drawn) and restores the mode it found.
        """
        tuner = self.mose
        if tuner is None or self.reliance_every is None:
            return None
        m = self.cfg.mose
        was_training = self.training
        self.train(False)
        try:
            dev = self.device
            labels = batch["labels"].to(dev)
            first = (labels != IGNORE).int().argmax(1)  # [B] the first target position
            target = labels.gather(1, first.unsqueeze(1)).squeeze(1).clamp_min(0)
            emb = self.embed(batch)
            mask = batch["attention_mask"].to(dev)
            mods = batch["modality_ids"].to(dev)
            pos = self.positions(mask)
            if m.weight_rule == "ogm":
                s = reliance.unimodal_scores(self.base_lm, self.modality_context, emb, mask, mods, pos,
                                             (first - 1).clamp_min(0), target)
                w = reliance.ogm_weights(s, m.reliance_alpha)
            else:
                ctl = ar.set_attention_mode(self, "monitor")
                try:
                    with self.modality_context.use(mods):
                        self.base_lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=False)
                    share = ctl.shares(on_device=True).mean(0)  # [M]
                finally:
                    apply_attention_settings(self, self.cfg.ar)
                counts = torch.stack([(mods == k).sum(1) for k in (TEXT, VISUAL, AUDIO)], 1).float().mean(0)
                w = reliance.attention_weights(share, counts, m.reliance_alpha)
        finally:
            self.train(was_training)
        tuner.set_modality_weights(w)
        return w


    def _label_ids(self, labels: tuple[str, ...]) -> list[list[int]]:
        return [self.prompts._ids(" " + lab) for lab in labels]

    @torch.no_grad()
    def score_labels(self, batch: dict[str, torch.Tensor], labels: tuple[str, ...] = CANONICAL_LABELS,
                     chunk: int = 64) -> torch.Tensor:
        """Log-likelihood ``[B, C]`` of each label's tokens (" label") right after the prompt.

        ``log p(label | prompt) = Σ_t log softmax(logits)[label token t]`` (sum over the label's tokens),
        or its mean per token with ``label_scoring="mean"`` (length-normalised).
        The media are encoded once; the B*C continuations run in chunks of ``chunk`` sequences.
        """
        if "labels" in batch and bool((batch["labels"] != IGNORE).any()):
            raise ValueError("score_labels needs prompts without targets: collate(..., include_target=False)")
        dev = self.device
        emb = self.embed(batch)  # [B, L, H]
        B, L, H = emb.shape
        cand = self._label_ids(tuple(labels))
        C, Lc = len(cand), max(len(c) for c in cand)
        cand_ids = torch.full((C, Lc), self.prompts.pad_id, dtype=torch.long, device=dev)
        cand_mask = torch.zeros((C, Lc), dtype=torch.long, device=dev)
        for j, c in enumerate(cand):
            cand_ids[j, : len(c)] = torch.tensor(c, device=dev)
            cand_mask[j, : len(c)] = 1
        cand_emb = self.base_lm.get_input_embeddings()(cand_ids)  # [C, Lc, H]
        mask = batch["attention_mask"].to(dev)
        mods = batch["modality_ids"].to(dev)
        scores = torch.empty(B * C, dtype=torch.float32)
        pairs = [(i, j) for i in range(B) for j in range(C)]
        for s in range(0, len(pairs), chunk):
            part = pairs[s: s + chunk]
            bi = torch.tensor([p[0] for p in part], device=dev)
            cj = torch.tensor([p[1] for p in part], device=dev)
            e = torch.cat([emb[bi], cand_emb[cj]], dim=1)
            m = torch.cat([mask[bi], cand_mask[cj]], dim=1)
            mod = torch.cat([mods[bi], torch.where(cand_mask[cj] > 0, TEXT, PAD)], dim=1)
            with self.modality_context.use(mod):
                logits = self.base_lm(inputs_embeds=e, attention_mask=m, position_ids=self.positions(m),
                                      use_cache=False).logits
            logp = torch.log_softmax(logits[:, L - 1: L - 1 + Lc].float(), dim=-1)  # predicts candidate tokens
            tok = logp.gather(-1, cand_ids[cj].unsqueeze(-1)).squeeze(-1)  # [n, Lc]
            total = (tok * cand_mask[cj]).sum(-1)
            if self.cfg.label_scoring == "mean":
                total = total / cand_mask[cj].sum(-1).clamp_min(1)
            scores[s: s + len(part)] = total.cpu()
        return scores.view(B, C)

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int = 48, **gen_kwargs: Any) -> list[str]:
        """Greedy (by default) generation after each prompt with the KV cache; returns the decoded texts."""
        if "labels" in batch and bool((batch["labels"] != IGNORE).any()):
            raise ValueError("generate needs prompts without targets: collate(..., include_target=False)")
        dev = self.device
        emb = self.embed(batch)
        mask = batch["attention_mask"].to(dev)
        kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.prompts.pad_id,
                  eos_token_id=self.tokenizer.eos_token_id)
        kw.update(gen_kwargs)
        with self.modality_context.use(batch["modality_ids"].to(dev)):
            out = self.base_lm.generate(inputs_embeds=emb, attention_mask=mask, **kw)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    # ----- adapters ---------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Projector weights (saved beside the peft adapter)."""
        return {f"visual.{k}": v for k, v in self.visual.projector.state_dict().items()} | {
            f"audio.{k}": v for k, v in self.audio.projector.state_dict().items()
        }

    def save_adapter(self, directory: str | Path) -> Path:
        """Write ``adapter/`` (peft layout), ``projectors.safetensors`` and ``model_config.json``."""
        from safetensors.torch import save as save_bytes

        from mosear.atomic import atomic_write, swap_dir, temp_name

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(self.lm, PeftModel):
            # the base weights are rebuilt (tiny: from the seed) or reloaded, never resized: an adapter on
            # lm_head needs no copy of the base head (peft's "auto" would save it and warn each time).
            # peft writes into a staged folder that replaces adapter/ whole (fsynced at every depth).
            staged = temp_name(d / "adapter")
            self.lm.save_pretrained(str(staged), save_embedding_layers=False)
            swap_dir(staged, d / "adapter")
        atomic_write(d / "projectors.safetensors",
                     save_bytes({k: v.detach().contiguous().cpu() for k, v in self.trainable_state().items()}))
        atomic_write(d / "model_config.json", json.dumps(self.cfg.model_dump(mode="json"), indent=2, sort_keys=True))
        return d

    def load_adapter(self, directory: str | Path, trainable: bool = False) -> None:
        """Load what :meth:`save_adapter` wrote; refuses an adapter saved for another model config."""
        d = check_adapter_folder(directory, self.cfg, peft=isinstance(self.lm, PeftModel))
        if isinstance(self.lm, PeftModel):
            mode = self.cfg.ar
            base = self.lm.unload()
            with _peft_compat():
                self.lm = PeftModel.from_pretrained(base, str(d / "adapter"), is_trainable=trainable)
            apply_attention_settings(self, mode)
        state = load_file(str(d / "projectors.safetensors"))
        self.visual.projector.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("visual.")})
        self.audio.projector.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("audio.")})
        self.visual.projector.requires_grad_(trainable and self.cfg.train_projectors)
        self.audio.projector.requires_grad_(trainable and self.cfg.train_projectors)

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)


def apply_attention_settings(model: MoSEARModel, settings: Any) -> ar.AttentionReallocator | None:
    return ar.set_attention_mode(model, settings.mode, threshold=settings.threshold, fraction=settings.fraction,
                                 layers=settings.layers, heads=settings.heads, queries=settings.queries,
                                 share=settings.share, direction=settings.direction)


@contextmanager
def _peft_compat() -> Iterator[None]:
    """peft's ``PeftModel.__init__`` reads transformers' deprecated ``is_gradient_checkpointing`` (a
    FutureWarning per model built, in every worker); only that message is silenced, nothing else."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _tiny_parts(cfg: ModelConfig) -> tuple[Any, nn.Module, nn.Module, nn.Module, int]:
    from transformers import CLIPVisionConfig, CLIPVisionModel, HubertConfig, HubertModel, LlamaConfig, LlamaForCausalLM

    from mosear.model.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    h, n_layers, heads = cfg.tiny_hidden, cfg.tiny_layers, cfg.tiny_heads
    llm_cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=h, intermediate_size=2 * h, num_hidden_layers=n_layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    lm = LlamaForCausalLM(llm_cfg)
    if cfg.inputs == "features":  # precomputed features replace the towers (mosear.model.features)
        return tok, lm, None, None, cfg.tiny_image_size
    vis = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=h, intermediate_size=2 * h, num_hidden_layers=2, num_attention_heads=heads,
        image_size=cfg.tiny_image_size, patch_size=8,
    ))
    aud = HubertModel(HubertConfig(
        hidden_size=h, intermediate_size=2 * h, num_hidden_layers=2, num_attention_heads=heads,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        vocab_size=32, mask_time_prob=0.0,
    ))
    return tok, lm, vis, aud, cfg.tiny_image_size


def _local_parts(cfg: ModelConfig) -> tuple[Any, nn.Module, nn.Module, nn.Module, int]:
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

    dtype = DTYPES[cfg.dtype]
    kw = dict(local_files_only=True)
    tok = AutoTokenizer.from_pretrained(cfg.llm_path, **kw)
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(cfg.llm_path, dtype=dtype, **kw)
    vis = CLIPVisionModel.from_pretrained(cfg.vision_path, dtype=dtype, **kw)
    aud = AutoModel.from_pretrained(cfg.audio_path, dtype=dtype, **kw)
    return tok, lm, vis, aud, vis.config.image_size


def build_model(cfg: ModelConfig) -> MoSEARModel:
    """Assemble encoders, projectors, the LM and the adapter (``cfg.adapter``); frozen backbone.

    The tiny preset is random-init under ``cfg.seed`` (same config -> same weights in every process, so a
    saved adapter fits a rebuilt tiny model). The emotion-llama preset reads local files only; ``hf-av``
    returns a transformers audio-visual LLM (:mod:`mosear.model.hf_av`) with the same interface.
    """
    if cfg.preset == "hf-av":
        from mosear.model.hf_av import build_av_model

        return build_av_model(cfg)
    with seeded(cfg.seed), _peft_compat():
        tok, lm, vis_tower, aud_tower, image_size = (_tiny_parts if cfg.preset == "tiny" else _local_parts)(cfg)
        lm.requires_grad_(False)
        hidden = lm.config.hidden_size
        if cfg.inputs == "features":
            from mosear.model.features import FeatureEncoder

            visual = FeatureEncoder(cfg.visual_feature_dim, cfg.visual_tokens, hidden)
            audio = FeatureEncoder(cfg.audio_feature_dim, cfg.audio_tokens, hidden)
        else:
            visual = VisualEncoder(vis_tower, cfg.visual_tokens, hidden)
            audio = AudioEncoder(aud_tower, cfg.audio_tokens, hidden)
        visual.projector.requires_grad_(cfg.train_projectors)
        audio.projector.requires_grad_(cfg.train_projectors)
        adapter = cfg.peft_config()
        if adapter is not None:
            lm = get_peft_model(lm, adapter)
    mean = tuple(getattr(getattr(vis_tower, "config", None), "image_mean", CLIP_MEAN) or CLIP_MEAN)
    std = tuple(getattr(getattr(vis_tower, "config", None), "image_std", CLIP_STD) or CLIP_STD)
    model = MoSEARModel(cfg, tok, lm, visual, audio, image_size, mean, std)
    model.train(True)  # as nn.Module starts, with the frozen towers in eval mode
    apply_attention_settings(model, cfg.ar)
    return model
