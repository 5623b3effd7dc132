"""Precomputed features as modality tokens: the table format, pooling, the projector's running
standardisation, and a model that learns from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mosear.model.features import (FeatureProjector, features_from_npy, load_features, pool_vectors,
                                   write_features_table)


def test_table_round_trip_and_bad_tables(tmp_path):
    rows = [{"key": "a", "visual": np.arange(6.0).reshape(2, 3), "audio": [1.0, np.nan]},
            {"key": "b", "visual": None, "audio": [3.0, 4.0]}]
    path = write_features_table(tmp_path / "f.parquet", rows, {"visual": 3, "audio": 2}, {"visual": "test"})
    table, dims = load_features(path)
    assert dims == {"visual": 3, "audio": 2}
    assert table["a"]["visual"].tolist() == [0, 1, 2, 3, 4, 5] and table["b"]["visual"] is None
    assert np.isnan(table["a"]["audio"][1])
    with pytest.raises(ValueError, match="not a multiple of its dimension"):
        write_features_table(tmp_path / "g.parquet", [{"key": "a", "visual": [1.0, 2.0], "audio": None}],
                             {"visual": 3, "audio": 2}, {})
    import pandas as pd

    pd.DataFrame({"key": ["a"]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="not a mosear feature table"):
        load_features(tmp_path / "plain.parquet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_features(tmp_path / "absent.parquet")


def test_mer2023_npy_folders(tmp_path):
    """MER2023's released features: one .npy per clip and extractor, utterance [D] or frame-level [T, D]."""
    (tmp_path / "vis").mkdir()
    (tmp_path / "aud").mkdir()
    np.save(tmp_path / "vis" / "sample_00000001.npy", np.ones((5, 4), np.float32))
    np.save(tmp_path / "vis" / "sample_00000002.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "aud" / "sample_00000001.npy", np.full(6, 2.0, np.float32))
    table, dims = load_features(features_from_npy(tmp_path / "f.parquet", tmp_path / "vis", tmp_path / "aud"))
    assert dims == {"visual": 4, "audio": 6}
    assert set(table) == {"mer2023__sample_00000001", "mer2023__sample_00000002"}
    assert table["mer2023__sample_00000001"]["visual"].size == 20 and table["mer2023__sample_00000002"]["audio"] is None


def test_pool_vectors():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    assert pool_vectors(x, 3, 2).tolist() == [[1, 2], [5, 6], [9, 10]]  # runs of two averaged
    assert pool_vectors(x[:1], 3, 2).tolist() == [[0, 1]] * 3  # one vector repeated
    assert np.isnan(pool_vectors(None, 2, 2)).all()
    y = x.copy()
    y[0:2] = np.nan  # a run with no evidence stays missing
    assert np.isnan(pool_vectors(y, 3, 2)[0]).all() and pool_vectors(y, 3, 2)[1].tolist() == [5, 6]


def test_projector_standardises_with_training_statistics():
    torch.manual_seed(0)
    proj = FeatureProjector(3, 2, 8)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(5):  # Welford over batches, NaN ignored per dimension
        x = rng.normal([30.0, 0.5, -4.0], [5.0, 0.1, 2.0], size=(4, 2, 3))
        x[0, :, 1] = np.nan
        seen.append(x.reshape(-1, 3))
        proj.train()(torch.tensor(x, dtype=torch.float32))
    allx = np.concatenate(seen)
    np.testing.assert_allclose(proj.mean.numpy(), np.nanmean(allx, 0), rtol=1e-5)
    var = proj.m2.numpy() / (proj.count.numpy() - 1)
    np.testing.assert_allclose(var, np.nanvar(allx, 0, ddof=1), rtol=1e-4)
    before = proj.mean.clone()
    proj.eval()(torch.full((1, 2, 3), 1e6))
    assert torch.equal(proj.mean, before)  # frozen outside training
    out = proj(torch.full((1, 2, 3), float("nan")))  # missing evidence: the training mean
    mean_in = proj.mean.float().view(1, 1, 3).expand(1, 2, 3)
    torch.testing.assert_close(out, proj(mean_in))


def test_features_model_saves_and_loads_its_projectors(tmp_path):
    from mosear.model import ModelConfig, build_model

    cfg = ModelConfig(inputs="features", adapter="lora", visual_feature_dim=3, audio_feature_dim=2,
                      visual_tokens=2, audio_tokens=1)
    model = build_model(cfg)
    assert model.visual.tower is None  # no tower is built for feature inputs
    samples = [{"key": f"k{i}", "meta": {}, "target": lab,
                "features": {"visual": np.full(3, float(i)), "audio": np.array([i, -i], np.float32)}}
               for i, lab in enumerate(["happy", "sad", "angry"])]
    batch = model.collate(samples)
    assert batch["visual_features"].shape == (3, 2, 3) and batch["audio_features"].shape == (3, 1, 2)
    assert "pixel_values" not in batch
    model(**batch).loss.backward()
    model.save_adapter(tmp_path / "a")
    other = build_model(cfg)
    other.load_adapter(tmp_path / "a")
    model.eval(), other.eval()
    prompt = model.collate(samples, include_target=False)
    torch.testing.assert_close(model.score_labels(prompt), other.score_labels(prompt))
    with pytest.raises(ValueError, match="no precomputed features"):
        model.collate([{"key": "x", "meta": {}}])


def test_building_and_loading_raise_no_library_deprecation(tmp_path):
    """peft's read of transformers' deprecated is_gradient_checkpointing printed a FutureWarning per model
    built (in every Ray worker); it is silenced at that call, and only that message."""
    import warnings

    from mosear.model import ModelConfig, build_model

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for adapter in ("lora", "mose"):
            m = build_model(ModelConfig(inputs="features", adapter=adapter))
            m.save_adapter(tmp_path / adapter)
            m.load_adapter(tmp_path / adapter)


@pytest.mark.parametrize("adapter", ["lora", "mose"])
def test_an_adapter_on_lm_head_round_trips_without_saving_the_base_head(tmp_path, adapter):
    """The sample run adapts lm_head too (workdir.SAMPLE_DEFAULTS): the adapter folder holds the adapter,
    not a copy of the frozen head, saving it warns nothing, and the reloaded model scores the same."""
    import warnings

    from safetensors import safe_open

    from mosear.model import ModelConfig, build_model

    cfg = ModelConfig(inputs="features", adapter=adapter, visual_feature_dim=3, audio_feature_dim=2,
                      visual_tokens=2, audio_tokens=1, lora={"target_modules": ["q_proj", "v_proj", "lm_head"]})
    model = build_model(cfg)
    samples = [{"key": f"k{i}", "meta": {}, "target": lab,
                "features": {"visual": np.full(3, float(i)), "audio": np.array([i, -i], np.float32)}}
               for i, lab in enumerate(["happy", "sad"])]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(**model.collate(samples)).loss.backward()
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save_adapter(tmp_path / "a")
    with safe_open(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert any("lm_head" in n for n in names) and not any(n.endswith("lm_head.weight") for n in names)
    other = build_model(cfg)
    other.load_adapter(tmp_path / "a")
    model.eval(), other.eval()
    prompt = model.collate(samples, include_target=False)
    torch.testing.assert_close(model.score_labels(prompt), other.score_labels(prompt))
