"""``mosear eval`` with a transformers audio-visual LLM: zero-shot vs + AR vs + MoSE in one run.

A tiny random-init Qwen2.5-Omni thinker (folder written by the test, processor built locally) on the
real sample shards; the same unit files, metrics and report as the backbone.
"""

from __future__ import annotations

import pandas as pd
import pytest

from mosear.config import load_config
from mosear.evaluate.config import EvalConfig
from mosear.evaluate.fanout import run_eval
from mosear.model.av_tiny import write_tiny_checkpoint


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("omni") / "Qwen2.5-Omni-tiny", "qwen2_5_omni")


def _model_cfg(folder, adapter="none"):
    return {"preset": "hf-av", "model_path": str(folder), "adapter": adapter, "num_frames": 4,
            "frame_pixels": [56 * 56, 112 * 112], "lora": {"r": 4, "alpha": 8.0, "dropout": 0.0}}


@pytest.fixture(scope="module")
def omni_run(omni, tmp_path_factory, camer_bench, eval_shards):
    from mosear.model import ModelConfig, build_model

    root = tmp_path_factory.mktemp("omni-eval")
    build_model(ModelConfig.model_validate(_model_cfg(omni, "mose"))).save_adapter(root / "mose" / "adapter")
    cfg = load_config(EvalConfig, overrides={
        "checkpoints": ["base", str(root / "mose" / "adapter")], "model": _model_cfg(omni),
        "benchmarks": [{"name": "camer", "format": "mined", "path": str(camer_bench), "shards": str(eval_shards),
                        "limit": 6}],
        "settings": [{"name": "ar_off"}, {"name": "ar_on", "ar": True, "ar_fraction": 0.5}],
        "output": str(root / "reports"), "max_new_tokens": 4, "progress": False, "num_workers": 2,
    })
    return cfg, run_eval(cfg)


def test_zero_shot_ar_and_mose_in_one_eval(omni_run, missing_key):
    cfg, res = omni_run
    assert res.ok, res.failed
    assert res.units == 4 and len(res.computed) == 4
    units = {f.name.split("__")[0] + "/" + f.name.split("__")[2]: pd.read_parquet(f)
             for f in (res.output / "units").glob("*.parquet")}
    assert set(units) == {"base/ar_off", "base/ar_on", "mose/ar_off", "mose/ar_on"}
    for name, df in units.items():
        ok = df[df["error"].isna()]
        assert len(df) == 6 and len(ok) == len(df) - (df["key"] == missing_key).sum() > 0
        assert ok["pred_label"].notna().all() and ok["scores"].map(len).eq(len(ok["labels"].iloc[0])).all()
        assert ok["text"].notna().all()  # references exist: answers were generated and judged
        shares = ok[["share_text", "share_visual", "share_audio"]].sum(1)
        assert shares.sub(1).abs().max() < 1e-6, name  # the monitor ran on the Omni decoder
    # AR moved attention from audio to video keys on the same zero-shot model
    off, on = units["base/ar_off"].set_index("key"), units["base/ar_on"].set_index("key")
    keys = off.index[off["error"].isna()]
    assert (on.loc[keys, "share_audio"] <= off.loc[keys, "share_audio"] + 1e-9).all()
    assert (on.loc[keys, "share_audio"] < off.loc[keys, "share_audio"]).any()
    m = pd.read_parquet(res.output / "metrics.parquet")
    assert {"accuracy", "conflict_gap", "share_audio"} <= set(m["metric"])
    assert (res.output / "report.html").is_file()


def test_rerun_is_cached(omni_run):
    cfg, _ = omni_run
    again = run_eval(cfg.model_copy(update={"report": False}))
    assert len(again.cached) == 4 and not again.computed


def test_unsupported_folder_fails_before_any_unit(tmp_path, camer_bench, eval_shards):
    from mosear.model.hf_av import UnsupportedModel

    bad = tmp_path / "llama"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama"}')
    cfg = load_config(EvalConfig, overrides={
        "checkpoints": ["base"], "model": {"preset": "hf-av", "model_path": str(bad), "adapter": "none"},
        "benchmarks": [{"name": "camer", "format": "mined", "path": str(camer_bench), "shards": str(eval_shards)}],
        "settings": [{"name": "ar_off"}], "output": str(tmp_path / "r"), "progress": False, "report": False})
    with pytest.raises(UnsupportedModel, match="model_type 'llama'"):
        run_eval(cfg)
    assert not list((tmp_path / "r" / "units").glob("*.parquet"))
