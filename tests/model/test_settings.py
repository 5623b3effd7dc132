"""MoSE's settings are named once: ``MoSESettings`` (validated config) and the peft ``MoSEConfig`` share
field names and defaults, and ``ModelConfig.peft_config`` hands every one over by name."""

from __future__ import annotations

import dataclasses

import pytest
from peft.config import PeftConfig

from mosear.config import ConfigError, load_config
from mosear.model.config import ModelConfig, MoSESettings
from mosear.model.mose import MoSEConfig

# MoSEConfig fields that are not MoSE settings: LoRA's shared ones (LoRASettings) and peft plumbing
_LORA = {"r", "lora_alpha", "lora_dropout", "target_modules"}
_PLUMBING = {"init_weights", "bias", "modules_to_save"}

CHANGED = dict(num_experts=3, share_experts=True, gate="none", gate_temperature=0.7, top_k=2,
               balance_loss_weight=0.2, dynamic_weights=False, weight_momentum=0.5, weight_strength=0.3,
               weight_min=0.6, weight_max=1.5, weight_rule="ogm", expert_init_std=0.01, gate_init_std=0.1)


def test_settings_and_peft_config_share_names_and_defaults():
    base = {f.name for f in dataclasses.fields(PeftConfig)}
    peft_fields = {f.name: f for f in dataclasses.fields(MoSEConfig)}
    mose_only = set(peft_fields) - base - _LORA - _PLUMBING
    settings = set(MoSESettings.model_fields) - set(MoSESettings.TRAINER_FIELDS)
    assert mose_only == settings
    defaults = MoSESettings()
    for name in settings:
        assert getattr(defaults, name) == peft_fields[name].default, name
    assert set(CHANGED) == settings  # the test below changes every one of them


def test_every_setting_reaches_the_peft_config():
    cfg = load_config(ModelConfig, overrides={"mose": CHANGED, "lora": {"r": 6, "alpha": 3.0, "dropout": 0.1,
                                                                         "target_modules": ["k_proj"]}})
    pc = cfg.peft_config()
    assert isinstance(pc, MoSEConfig)
    for name, value in CHANGED.items():
        assert getattr(pc, name) == value, name
    assert (pc.r, pc.lora_alpha, pc.lora_dropout, pc.target_modules) == (6, 3.0, 0.1, {"k_proj"})
    assert cfg.peft_config(target_modules=["a.q_proj"]).target_modules == {"a.q_proj"}  # hf-av's resolved names
    lora = load_config(ModelConfig, overrides={"adapter": "lora", "lora": {"r": 6}}).peft_config()
    assert (type(lora).__name__, lora.r, lora.lora_alpha, lora.bias) == ("LoraConfig", 6, 16.0, "none")
    assert load_config(ModelConfig, overrides={"adapter": "none"}).peft_config() is None


def test_the_old_temperature_name_still_loads():
    with pytest.warns(DeprecationWarning, match="gate_temperature"):
        cfg = load_config(ModelConfig, overrides={"mose": {"temperature": 0.5}})
    assert cfg.mose.gate_temperature == 0.5 and "temperature" not in cfg.mose.model_dump()
    with pytest.raises(ConfigError, match="gate_temperature only"):
        load_config(ModelConfig, overrides={"mose": {"temperature": 0.5, "gate_temperature": 0.5}})


def test_reliance_rules_are_refused_where_they_cannot_run():
    with pytest.raises(ConfigError, match="tiny or emotion-llama"):
        load_config(ModelConfig, overrides={"preset": "hf-av", "model_path": "x", "mose": {"weight_rule": "ogm"}})
    from mosear.train import TrainConfig

    with pytest.raises(ConfigError, match="strategy=ddp"):
        load_config(TrainConfig, overrides={"strategy": "fsdp", "use_gpu": True,
                                            "model": {"preset": "tiny", "mose": {"weight_rule": "attention"}}})


def test_ge_noise_needs_a_reliance_rule():
    from mosear.model.config import MoSESettings

    assert MoSESettings(weight_rule="ogm", ge_noise=True).ge_noise
    with pytest.raises(ValueError, match="ge_noise needs a reliance rule"):
        MoSESettings(weight_rule="update", ge_noise=True)
    with pytest.raises(ValueError, match="ge_noise needs a reliance rule"):
        MoSESettings(weight_rule="ogm", dynamic_weights=False, ge_noise=True)
