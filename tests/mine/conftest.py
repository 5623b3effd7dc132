"""Fixtures for the mining tests: real shards of the sample corpus, written by the shard stage."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small frames keep the tests fast; BlazeFace still finds the faces at 112x112.
SHARD_OVERRIDES = {"num_frames": 6, "height": 112, "width": 112, "samples_per_shard": 8, "progress": False}


@pytest.fixture(scope="session")
def sample_shards(samples_dir: Path, tmp_path_factory, ray_local) -> Path:
    """Shards of the whole sample corpus (33 clips, 5 shards)."""
    from mosear.config import load_config
    from mosear.shards.config import ShardConfig
    from mosear.shards.run import run_shard

    out = tmp_path_factory.mktemp("mine_in") / "shards"
    cfg = load_config(ShardConfig, None, {"corpus": str(samples_dir / "corpus.yaml"), "output": str(out),
                                          **SHARD_OVERRIDES})
    res = run_shard(cfg)
    assert res.written == 33, res
    return out


@pytest.fixture(scope="session")
def real_samples(sample_shards: Path) -> list[dict]:
    """The first shard's samples in memory (8 real clips) for stage unit tests."""
    from mosear.shards.reader import iter_samples, list_shards

    return list(iter_samples(list_shards(sample_shards)[:1]))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Random-weight transformers classifiers saved locally (no hub): audio (wav2vec2) and image (ViT)."""
    from transformers import (ViTConfig, ViTForImageClassification, ViTImageProcessor, Wav2Vec2Config,
                              Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification)

    labels = {0: "angry", 1: "happy", 2: "sad", 3: "other"}  # "other" has no canonical name
    root = tmp_path_factory.mktemp("hf")
    a = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, classifier_proj_size=16, id2label=labels,
        label2id={v: k for k, v in labels.items()}))
    a.save_pretrained(root / "audio")
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(root / "audio")
    v = ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, id2label=labels, label2id={v: k for k, v in labels.items()}))
    v.save_pretrained(root / "visual")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "visual")
    return root
