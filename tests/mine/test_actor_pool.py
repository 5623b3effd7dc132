"""The mining actor pool (mosear.mine.run.mine_shards): an actor that dies or cannot set up fails only
the shards it was given, with the reason, and never hangs the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mosear.config import load_config
from mosear.mine.config import MineConfig

CRASH_STAGES = '''
import os

from mosear.mine.stage import MiningStage


class ExitsOn(MiningStage):
    """Reproduces a native crash (a segfault in a model library) on one sample: the process exits."""

    name = "exits_on"
    adds = ("checked",)

    def __init__(self, key: str):
        self.key = key

    def process(self, sample):
        if sample["key"] == self.key:
            os._exit(3)
        sample["checked"] = True
        return sample


class SetupFails(MiningStage):
    """A stage whose model cannot load."""

    name = "setup_fails"
    adds = ("checked",)

    def setup(self):
        raise FileNotFoundError("model file /nowhere/model.tflite is missing")

    def process(self, sample):
        return sample
'''


@pytest.fixture(scope="module")
def crash_pkg(tmp_path_factory) -> Path:
    pkg = tmp_path_factory.mktemp("crash") / "crash_stages"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(CRASH_STAGES)
    return pkg


def _cfg(tmp_path: Path, pkg: Path, stage: dict, workers: int) -> MineConfig:
    return load_config(MineConfig, None, {"output": str(tmp_path / "mined"), "workers": workers, "progress": False,
                                          "py_modules": [str(pkg)], "stages": ["require_label", stage]})


def test_an_actor_that_dies_mid_shard_fails_that_shard_only(sample_shards, tmp_path, crash_pkg, ray_local):
    from mosear.mine.run import mine_shards
    from mosear.shards.reader import iter_samples, list_shards

    shards = list_shards(sample_shards)
    victim = next(iter_samples(shards[1:2]))["key"]
    cfg = _cfg(tmp_path, crash_pkg, {"stage": "crash_stages:ExitsOn", "params": {"key": victim}}, workers=1)
    mined, skipped, failed = mine_shards(cfg, shards)
    name = shards[1].name.removesuffix(".tar")
    assert (mined, skipped) == (len(shards), 0) and list(failed) == [name], (mined, skipped, failed)
    assert "Actor" in failed[name] or "actor" in failed[name]
    ok = sorted(p.name for p in (tmp_path / "mined" / "evidence").glob("*.stats.json"))
    assert ok == sorted(f"{s.name.removesuffix('.tar')}.stats.json" for s in shards if s != shards[1])
    assert all(json.loads((tmp_path / "mined" / "evidence" / n).read_text())["status"] == "ok" for n in ok)


def test_stages_that_cannot_set_up_fail_every_shard_with_the_reason(sample_shards, tmp_path, crash_pkg, ray_local):
    from mosear.mine.run import mine_shards
    from mosear.shards.reader import list_shards

    shards = list_shards(sample_shards)
    cfg = _cfg(tmp_path, crash_pkg, {"stage": "crash_stages:SetupFails"}, workers=2)
    mined, _, failed = mine_shards(cfg, shards)
    assert mined == len(shards) and len(failed) == len(shards)
    assert all("model file /nowhere/model.tflite is missing" in e for e in failed.values()), failed
    assert not list((tmp_path / "mined" / "evidence").glob("*.stats.json"))
