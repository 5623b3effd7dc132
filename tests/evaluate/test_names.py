"""Names that become parts of file paths are validated like benchmark names (no path escapes)."""

from __future__ import annotations

import pytest

from mosear.config import ConfigError, load_config
from mosear.evaluate.config import EvalConfig


def _cfg(setting: str, bench: str = "b") -> EvalConfig:
    return load_config(EvalConfig, overrides={
        "checkpoints": ["base"], "benchmarks": [{"name": bench, "format": "mined", "path": "x"}],
        "settings": [{"name": setting}]})


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "with space", ""])
@pytest.mark.parametrize("where", ["setting", "benchmark"])
def test_path_reaching_names_are_refused(name, where):
    with pytest.raises(ConfigError, match="file name"):
        _cfg(name) if where == "setting" else _cfg("ar_off", bench=name)


def test_good_names_pass():
    cfg = _cfg("ar_f0.3", bench="ca-mer_v1")
    assert cfg.settings[0].name == "ar_f0.3"


def test_shard_split_names_are_refused_when_they_would_escape(tmp_path):
    from mosear.shards.config import ShardConfig

    (tmp_path / "r").mkdir()
    with pytest.raises(ConfigError, match="split names"):
        load_config(ShardConfig, overrides={"sources": [{"adapter": "generic", "root": str(tmp_path / "r"),
                                                         "split": "../x"}]})
