"""``ModelConfig``: the typed, validated settings of the MoSEAR model (backbone, adapter, AR)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from mosear.config import StageConfig

EMOTION_LLAMA_INSTRUCTION = (
    "Please determine which emotion label in the video represents: "
    "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt."
)

__all__ = ["ModelConfig", "MoSESettings", "LoRASettings", "ARSettings", "EMOTION_LLAMA_INSTRUCTION"]


class LoRASettings(StageConfig):
    """Rank / scaling shared by the LoRA baseline and MoSE (Emotion-LLaMA: r=64, alpha=16, dropout 0.05)."""

    r: int = Field(64, gt=0, description="LoRA rank (MoSE: rank of A and of each expert B)")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(["q_proj", "v_proj"], description="LLM linear layers to adapt")

    def peft_kwargs(self) -> dict[str, Any]:
        """These settings under peft's names (``LoraConfig`` and :class:`~mosear.model.mose.MoSEConfig` alike)."""
        return {"r": self.r, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": list(self.target_modules)}


class MoSESettings(StageConfig):
    """MoSE-only settings (formulas in mosear/model/mose/layer.py and docs/model.md): the one place they
    are named, bounded and documented.

    Every field but :attr:`TRAINER_FIELDS` is a field of the peft config
    :class:`~mosear.model.mose.MoSEConfig` under the same name with the same default (a test checks
    both ways); :meth:`adapter_kwargs` hands them over by name. The trainer fields are read by the
    train step and the backbone (when to measure reliance, its alpha, whether projectors follow).
    """

    TRAINER_FIELDS: ClassVar[tuple[str, ...]] = ("reliance_alpha", "reliance_every", "scale_projectors", "ge_noise")

    num_experts: int = Field(4, gt=0, description="K expert B matrices per modality")
    share_experts: bool = Field(False, description="one expert set for all modalities (gates stay per modality)")
    gate: Literal["softmax", "none"] = Field("softmax", description="learned softmax gate or uniform 1/K")
    gate_temperature: float = Field(1.0, gt=0, description="gate softmax temperature tau (formerly 'temperature')")
    top_k: int | None = Field(None, gt=0, description="keep the k largest gate weights (renormalised)")
    balance_loss_weight: float = Field(0.01, ge=0, description="lambda of the load-balancing loss")
    dynamic_weights: bool = Field(True, description="rescale audio/visual updates by measured contribution")
    weight_momentum: float = Field(0.9, ge=0, lt=1, description="EMA momentum of the contribution")
    weight_strength: float = Field(0.5, ge=0, description="gamma in w_m = (c_mean / c_m) ** gamma")
    weight_min: float = Field(0.5, gt=0, le=1)
    weight_max: float = Field(2.0, ge=1)
    weight_rule: Literal["update", "ogm", "attention"] = Field(
        "update", description="how w is set: update size (forward + gradient), or reliance (gradient only: "
                              "unimodal confidence 'ogm', attention share per token 'attention')")
    reliance_alpha: float = Field(0.5, gt=0, description="alpha of the reliance rules: w = 1 - tanh(alpha * rho)")
    reliance_every: int = Field(16, gt=0, description="measure reliance every k training steps (reliance rules; "
                                                    "k >= 16 keeps a 7B step within 1.25x LoRA's ops, docs/model.md)")
    scale_projectors: bool = Field(True, description="reliance weights also scale the projectors' gradients")
    ge_noise: bool = Field(False, description="OGM-GE: Gaussian noise of each gradient's own std on the slowed "
                           "modality's experts (and projector) after the backward (reliance rules only)")
    expert_init_std: float = Field(0.0, ge=0, description="centred random start of the experts (0: B = 0)")
    gate_init_std: float = Field(0.0, ge=0, description="random start of the gates (0: uniform)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "temperature" in data:  # the field's name before 2026-12
            if "gate_temperature" in data:
                raise ValueError("give gate_temperature only ('temperature' is its old name)")
            warnings.warn("model.mose.temperature is now model.mose.gate_temperature", DeprecationWarning,
                          stacklevel=2)
            data = {("gate_temperature" if k == "temperature" else k): v for k, v in data.items()}
        return data

    def adapter_kwargs(self) -> dict[str, Any]:
        """The :class:`~mosear.model.mose.MoSEConfig` fields among these settings, by name."""
        return {k: getattr(self, k) for k in type(self).model_fields if k not in self.TRAINER_FIELDS}

    @property
    def uses_reliance(self) -> bool:
        """True when the modality weights come from a reliance rule the train step measures."""
        return self.dynamic_weights and self.weight_rule != "update"

    @model_validator(mode="after")
    def _top_k_fits(self) -> "MoSESettings":
        if self.top_k is not None and self.top_k > self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) > num_experts ({self.num_experts})")
        if self.ge_noise and not self.uses_reliance:
            raise ValueError("ge_noise needs a reliance rule: weight_rule 'ogm' or 'attention' with dynamic_weights")
        return self


class ARSettings(StageConfig):
    """Attention mode at inference; ``ar`` uses threshold/fraction in the chosen layers/heads."""

    mode: Literal["sdpa", "eager", "ar", "monitor"] = Field("sdpa", description="attention implementation")
    threshold: float = Field(0.5, ge=0, le=1, description="tau: reallocate rows whose audio share exceeds it")
    fraction: float = Field(0.0, ge=0, le=1, description="f: fraction of the audio mass moved to visual keys")
    layers: list[int] | None = Field(None, description="LLM layers (None: all)")
    heads: list[int] | None = Field(None, description="query heads (None: all)")
    queries: Literal["text", "all"] = Field("text", description="which query rows are reallocated / monitored")
    share: Literal["mass", "token"] = Field("mass", description="audio share from attention mass or mass per key")
    direction: Literal["audio", "both"] = Field(
        "audio", description="'audio': move mass from audio to visual keys; 'both': from the dominant modality")


class ModelConfig(StageConfig):
    """The MoSEAR model. ``preset=tiny`` builds random-init encoders and LLM from configs (seeded);
    ``preset=emotion-llama`` loads CLIP/EVA-class vision, HuBERT-class audio and a chat LLM from
    local paths or the local HF cache only (``local_files_only=True``)."""

    preset: Literal["tiny", "emotion-llama", "hf-av"] = "tiny"
    model_path: str | None = Field(None, description="hf-av: checkpoint folder (or cached id) of a transformers "
                                   "audio-visual LLM (Qwen2.5-Omni, Qwen3-Omni; thinker or full); local files only")
    system_prompt: str | None = Field(None, description="hf-av: system turn of the chat template (None: none)")
    frame_pixels: tuple[int, int] | None = Field(
        None, description="hf-av: (min, max) pixels of a resized frame (None: the model processor's defaults, "
        "Qwen2.5-Omni 128..768 x 28², Qwen3-Omni 128..768 x 32²)")
    audio_in_video: bool = Field(
        True, description="hf-av: a video with sound is one video part whose video and audio positions are "
        "interleaved in co-timed chunks (the model processor's use_audio_in_video / load_audio_from_video, how "
        "the Omni models are run by their authors); false: a video part, then a separate audio part")
    label_scoring: Literal["sum", "mean"] = Field(
        "sum", description="score of a label in score_labels: 'sum' of its tokens' log-probabilities "
        "(log p(label | prompt): the argmax is the label the model finds most probable), or their 'mean' "
        "(length-normalised; favours labels of several tokens whose later tokens are near-certain)")
    llm_path: str | None = Field(None, description="local path or cached id of the causal LM (emotion-llama)")
    vision_path: str | None = Field(None, description="local path / cached id of a CLIP vision model")
    audio_path: str | None = Field(None, description="local path / cached id of a HuBERT / wav2vec2 model")
    inputs: Literal["media", "features"] = Field(
        "media", description="media: frames and waveform through the encoder towers; features: precomputed "
        "per-clip/per-frame features (mined features.parquet, MER2023's released ones) through their own "
        "projectors (mosear.model.features), no towers built")
    visual_feature_dim: int = Field(99, gt=0, description="inputs=features: visual feature size (mined: 11 fer + 88)")
    audio_feature_dim: int = Field(88, gt=0, description="inputs=features: audio feature size (mined: eGeMAPS 88)")
    visual_tokens: int = Field(16, gt=0, description="visual tokens in the prompt (Emotion-LLaMA: 256+3)")
    audio_tokens: int = Field(4, gt=0, description="audio tokens in the prompt (Emotion-LLaMA: 1)")
    num_frames: int = Field(4, gt=0, description="frames (uniform over the clip) fed to the vision encoder")
    max_audio_seconds: float = Field(8.0, gt=0, description="audio beyond this is cut (seconds at 16 kHz)")
    max_text_tokens: int = Field(96, gt=0, description="transcript tokens kept")
    max_target_tokens: int = Field(64, gt=0, description="target (label + reasoning) tokens kept")
    instruction: str = Field(EMOTION_LLAMA_INSTRUCTION, description="task instruction placed after the media")
    adapter: Literal["mose", "lora", "none"] = "mose"
    lora: LoRASettings = Field(default_factory=LoRASettings)
    mose: MoSESettings = Field(default_factory=MoSESettings)
    ar: ARSettings = Field(default_factory=ARSettings)
    train_projectors: bool = Field(True, description="projectors are trained and saved with the adapter")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = Field(0, description="seed of the random-init tiny backbone and of adapter init")
    # tiny preset sizes
    tiny_hidden: int = Field(64, gt=0)
    tiny_layers: int = Field(2, gt=0)
    tiny_heads: int = Field(4, gt=0)
    tiny_image_size: int = Field(32, gt=0)

    @model_validator(mode="after")
    def _paths(self) -> "ModelConfig":
        if self.preset == "emotion-llama":
            missing = [n for n in ("llm_path", "vision_path", "audio_path") if not getattr(self, n)]
            if missing:
                raise ValueError(f"preset emotion-llama needs local {', '.join(missing)}")
        if self.preset == "hf-av" and not self.model_path:
            raise ValueError("preset hf-av needs model_path (a local checkpoint folder or a cached model id)")
        if self.preset == "hf-av" and self.adapter == "mose" and self.mose.uses_reliance:
            raise ValueError(f"mose.weight_rule={self.mose.weight_rule!r} needs the tiny or emotion-llama preset: "
                             "the reliance measurement masks one modality's embeddings, which hf-av's thinker "
                             "builds inside its own forward (use weight_rule=update or dynamic_weights=false)")
        if self.tiny_hidden % self.tiny_heads:
            raise ValueError("tiny_hidden must be a multiple of tiny_heads")
        return self

    def peft_config(self, target_modules: list[str] | None = None) -> Any:
        """The peft config of ``adapter``: ``LoraConfig`` or :class:`~mosear.model.mose.MoSEConfig` (None for
        ``adapter=none``), built from :class:`LoRASettings` and :class:`MoSESettings` by name.

        ``target_modules`` replaces ``lora.target_modules`` (hf-av resolves them to the decoder's layers).
        Imports peft (this module itself does not).
        """
        if self.adapter == "none":
            return None
        kw = self.lora.peft_kwargs()
        if target_modules is not None:
            kw["target_modules"] = list(target_modules)
        if self.adapter == "lora":
            from peft import LoraConfig

            return LoraConfig(**kw, bias="none")
        from mosear.model.mose import MoSEConfig

        return MoSEConfig(**kw, **self.mose.adapter_kwargs())
