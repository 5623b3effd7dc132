"""``mosear train`` fine-tunes MoSE (and LoRA) on a tiny random-init Qwen2.5-Omni thinker: Ray Train,
two DDP workers on CPU (gloo), real sample shards; the saved adapter loads back through peft."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mosear.config import load_config
from mosear.model import ModelConfig, build_model
from mosear.model.av_tiny import write_tiny_checkpoint
from mosear.train import TrainConfig, run_train



def test_preflight_names_a_bad_model_folder(tmp_path):
    from mosear.config import ConfigError
    from mosear.train.preflight import preflight

    folder = write_tiny_checkpoint(tmp_path / "model", "qwen2_5_omni")
    (folder / "tokenizer_config.json").unlink()
    cfg = load_config(TrainConfig, overrides={"shards": [str(tmp_path / "no-shards")], "output": str(tmp_path / "o"),
                                              "model": {"preset": "hf-av", "model_path": str(folder)}})
    with pytest.raises(ConfigError, match="model: .*tokenizer_config.json"):
        preflight(cfg)
    model = {"preset": "hf-av", "model_path": str(folder), "lora": {"target_modules": ["qkv"]}}
    cfg = cfg.model_copy(update={"model": model})
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no linear layer of the text decoder matches"):
        preflight(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["mose"])  # LoRA on the same model: tests/model/test_hf_av.py
def test_train_steps_on_an_omni_thinker(adapter, ray_local, train_shards, tmp_path_factory):
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("omni") / "model", "qwen2_5_omni")
    model = {"preset": "hf-av", "model_path": str(folder), "adapter": adapter, "num_frames": 4,
             "frame_pixels": [56 * 56, 112 * 112], "lora": {"r": 4, "alpha": 8.0, "dropout": 0.0,
                                                            "target_modules": ["q_proj", "v_proj"]}}
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(TrainConfig, overrides={
        "shards": [str(train_shards)], "output": str(out), "name": "omni", "model": model, "num_workers": 2,
        "batch_size": 1, "max_steps": 3, "warmup_steps": 1, "lr": 5e-3, "checkpoint_every": 3,
        "shuffle_buffer": 2, "torch_threads": 1, "progress": False, "max_failures": 0})
    res = run_train(cfg)
    assert res.steps == 3 and res.final_loss is not None
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)
    if adapter == "mose":
        assert any(k.startswith("gate/") for k in rows[-1]) and "modality_weight/audio" in rows[-1]
    weights = load_file(str(res.adapter / "adapter" / "adapter_model.safetensors"))
    marker = "mose_B" if adapter == "mose" else "lora_B"
    trained = [v for k, v in weights.items() if marker in k]
    assert trained and all(".language_model.layers." in k for k in weights)  # text decoder q/v only
    assert any(v.abs().sum() > 0 for v in trained)  # B starts at 0: training moved it
    m = build_model(ModelConfig.model_validate(json.loads((res.adapter / "model_config.json").read_text())))
    m.load_adapter(res.adapter)  # through PeftModel.from_pretrained
    sd = {k: v for k, v in m.lm.state_dict().items() if marker in k}
    assert len(sd) == len(trained) and any(v.abs().sum() > 0 for v in sd.values())
