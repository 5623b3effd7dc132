"""The stage API: pipelines from Python and YAML, drops with reasons, errors isolated, stats, lookup."""

from __future__ import annotations

import numpy as np
import pytest

from mosear.mine.stage_pipeline import StagePipeline, available_stages, load_stage_class
from mosear.mine.stage import Drop, FilterStage, MiningStage, Resources, StageContractError


def _sample(key: str, audio: np.ndarray | None = None, label: str | None = "happy") -> dict:
    return {"key": key, "frames": np.full((2, 8, 8, 3), 90, np.uint8),
            "audio": np.sin(np.linspace(0, 400, 16000)).astype(np.float32) * 0.3 if audio is None else audio,
            "sample_rate": 16000, "meta": {"label": label}}


class Doubler(MiningStage):
    name = "doubler"
    adds = ("double",)

    def process(self, sample):
        sample["double"] = 2 * len(sample["key"])
        return sample


class Fussy(MiningStage):
    """Raises on one key only (reproduces a stage bug on one sample)."""

    name = "fussy"
    adds = ("fussy_ok",)

    def __init__(self, bad_key: str = "b"):
        self.bad_key = bad_key

    def process_batch(self, samples):
        for s in samples:
            if s["key"] == self.bad_key:
                raise ValueError(f"cannot handle {s['key']}")
            s["fussy_ok"] = True
        return samples


class Forgetful(MiningStage):
    name = "forgetful"
    adds = ("promised",)

    def process(self, sample):
        return sample


class ShortKeys(FilterStage):
    name = "short_keys"
    drop_reasons = ("long_key",)

    def keep(self, sample):
        return True if len(sample["key"]) < 4 else (False, "long_key")


def test_pipeline_runs_in_order_with_stats_and_audit():
    pipe = StagePipeline([ShortKeys(), Doubler(), Fussy(bad_key="zz")])
    kept, audit = pipe.run_batch([_sample("a"), _sample("b"), _sample("long"), _sample("c")])
    assert [s["key"] for s in kept] == ["a", "b", "c"]
    assert all(s["double"] == 2 and s["fussy_ok"] for s in kept)
    assert {(r["key"], r["stage"], r["reason"]) for r in audit} == {("long", "short_keys", "long_key")}
    st = {k: v.to_dict() for k, v in pipe.stats.items()}
    assert (st["short_keys"]["in"], st["short_keys"]["out"], st["short_keys"]["dropped"]) == (4, 3, {"long_key": 1})
    assert (st["fussy"]["in"], st["fussy"]["out"], st["fussy"]["errors"]) == (3, 3, 0)
    assert st["doubler"]["seconds"] >= 0


def test_a_stage_exception_is_raised_naming_stage_and_sample():
    """Catches: an exception of a stage on one sample turned into ``Drop("error")`` (an error cached as a
    result: the shard would commit without the sample and never be mined again after the fix)."""
    from mosear.mine.stage_pipeline import StageRaisedError

    pipe = StagePipeline([ShortKeys(), Doubler(), Fussy(bad_key="b")])
    with pytest.raises(StageRaisedError, match=r"stage fussy raised on sample b: ValueError: cannot handle b"):
        pipe.run_batch([_sample("a"), _sample("b"), _sample("c")])
    assert pipe.stats["fussy"].errors == 1


def test_stage_that_forgets_a_declared_field_is_a_contract_error():
    with pytest.raises(StageContractError, match="promised"):
        StagePipeline([Forgetful()]).run_batch([_sample("a")])


def test_pipeline_from_yaml_with_params_and_import_paths(tmp_path):
    spec = tmp_path / "pipe.yaml"
    spec.write_text(
        "stages:\n"
        "  - require_label\n"
        "  - {stage: signal_quality, params: {silence_dbfs: -50}}\n"
        f"  - {{stage: '{__name__}:Fussy', params: {{bad_key: zz}}}}\n"
    )
    pipe = StagePipeline.from_yaml(spec)
    assert [s.stage_name for s in pipe.stages] == ["require_label", "signal_quality", "fussy"]
    assert pipe.stages[1].silence_dbfs == -50
    kept, audit = pipe.run_batch([_sample("a"), _sample("n", label=None), _sample("q", audio=np.zeros(8000, np.float32))])
    assert [s["key"] for s in kept] == ["a", "q"]
    assert audit == [{"key": "n", "stage": "require_label", "reason": "no_label", "detail": ""}]
    assert kept[1]["audio_silent"] and not kept[0]["audio_silent"]
    assert pipe.describe()[1]["adds"] == ["audio_rms_dbfs", "audio_silent", "frames_luma", "frames_black"]


@pytest.mark.parametrize("bad, match", [
    ("no_such_stage", "unknown mining stage 'no_such_stage'"),
    ("mosear.labels:canonical_label", "not a MiningStage subclass"),
])
def test_bad_stage_names_are_clear_errors(bad, match):
    with pytest.raises((KeyError, TypeError), match=match):
        load_stage_class(bad)


def test_unknown_stage_params_are_rejected():
    with pytest.raises(TypeError):
        StagePipeline.from_spec([{"stage": "signal_quality", "params": {"silence": -3}}])
    with pytest.raises(ValueError, match="unknown keys"):
        StagePipeline.from_spec([{"stage": "signal_quality", "parms": {}}])


def test_builtins_resolve_and_resources_combine():
    names = available_stages()
    for n in ("require_label", "signal_quality", "audio_egemaps", "visual_fer", "text_lexicon", "hf_classifier"):
        assert issubclass(load_stage_class(n), MiningStage), names[n]
    assert Resources(cpus=1, gpus=0.5) + Resources(cpus=2) == Resources(cpus=2, gpus=0.5)


def test_drop_and_missing_members():
    pipe = StagePipeline.from_spec(["signal_quality"])
    broken = {"key": "x", "frames": np.zeros((1, 4, 4, 3), np.uint8), "meta": {"label": "sad"}}
    empty = {"key": "e", "frames": np.zeros((0, 4, 4, 3), np.uint8), "audio": np.zeros(0, np.float32),
             "sample_rate": 16000, "meta": {}}
    kept, audit = pipe.run_batch([broken, empty])
    assert kept == []
    assert {(r["key"], r["reason"]) for r in audit} == {("x", "missing_member"), ("e", "empty_media")}
    assert "wav" in next(r["detail"] for r in audit if r["key"] == "x")
    assert isinstance(Drop("r"), Drop)
