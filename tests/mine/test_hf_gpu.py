"""The model-backed evidence stage on a GPU actor: runs on CUDA and agrees with the CPU run."""

from __future__ import annotations

import numpy as np
import pytest

from mosear.mine.stages.hf import HFClassifierEvidence


@pytest.mark.gpu
@pytest.mark.parametrize("modality", ["audio", "visual"])
def test_hf_classifier_on_gpu_matches_cpu(tiny_models, modality):
    import torch

    rng = np.random.default_rng(0)
    samples = [{"key": f"k{i}", "frames": rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8),
                "audio": (rng.standard_normal(16000 + 800 * i) * 0.1).astype(np.float32),
                "sample_rate": 16000, "meta": {}} for i in range(6)]
    out = {}
    for gpus in (1, 0):
        stage = HFClassifierEvidence(model_path=str(tiny_models / modality), modality=modality, gpus=gpus,
                                     num_frames=4)
        stage.setup()
        assert stage.device == ("cuda" if gpus else "cpu")
        assert next(stage._model.parameters()).is_cuda == bool(gpus)
        assert stage.resources.gpus == gpus
        out[gpus] = np.stack([s[f"hf_{modality}_probs"] for s in stage.process_batch([dict(s) for s in samples])])
    assert torch.cuda.is_available()
    np.testing.assert_allclose(out[1], out[0], atol=2e-3)
    np.testing.assert_allclose(out[1].sum(1), 1.0, atol=1e-4)
