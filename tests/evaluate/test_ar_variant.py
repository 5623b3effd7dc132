"""AR's share and direction reach `mosear eval`: the evaluated AR is the AR that was configured/validated."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def token_both_model():
    from mosear.model import ModelConfig, build_model

    return build_model(ModelConfig(preset="tiny", ar={"share": "token", "direction": "both", "threshold": 0.6}))


def test_a_token_both_model_is_evaluated_as_token_both(token_both_model):
    """The bug (issue 21): set_unit_attention dropped ar.share / ar.direction, so a model configured with
    share: token, direction: both was evaluated as mass / audio. A setting's own values override them."""
    from mosear.evaluate.config import SettingSpec
    from mosear.evaluate.runner import set_unit_attention

    ctl = set_unit_attention(token_both_model, SettingSpec(name="ar_on", ar=True, ar_fraction=0.5))
    assert (ctl.share, ctl.direction, ctl.threshold, ctl.fraction) == ("token", "both", 0.6, 0.5)
    ctl = set_unit_attention(token_both_model, SettingSpec(name="x", ar=True, ar_share="mass", ar_direction="audio"))
    assert (ctl.share, ctl.direction) == ("mass", "audio")
    set_unit_attention(token_both_model, SettingSpec(name="ar_off", monitor=False))


def test_calibration_searches_the_options_the_config_lists(token_both_model):
    """The bug (issue 21): calibration searched mass/audio only, so the token share docs/model.md recommends
    could not be reached through `mosear eval`. Without a list it searches the checkpoint's own variant."""
    from mosear.config import load_config
    from mosear.evaluate.config import EvalConfig
    from mosear.evaluate.runner import calibration_options

    base = {"checkpoints": ["base"], "benchmarks": [{"name": "b", "format": "mined", "path": "x"}]}
    cfg = load_config(EvalConfig, overrides=base)
    assert calibration_options(token_both_model, cfg) == [{"share": "token", "direction": "both"}]
    listed = load_config(EvalConfig, overrides={**base, "calibration": {"options": [
        {"share": "mass", "direction": "audio"}, {"share": "token"}]}})
    assert calibration_options(token_both_model, listed) == [{"share": "mass", "direction": "audio"},
                                                              {"share": "token", "direction": "audio"}]
    with pytest.raises(Exception, match="calibrate: true chooses"):
        load_config(EvalConfig, overrides={**base, "settings": [{"name": "c", "ar": True, "calibrate": True,
                                                                 "ar_share": "token"}]})
