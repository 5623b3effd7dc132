"""The open mining contract: declared features and their checks, versions in the mining hash, one
unstorable value drops one sample (not the shard), built-in stages listed once, no import cycles."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mosear.config import load_config, output_fields
from mosear.identity import changed
from mosear.mine.config import MineConfig
from mosear.mine.stage_pipeline import BUILTIN_STAGES, ENTRY_POINT_GROUP, StagePipeline, load_stage_class
from mosear.mine.stage import PIPELINE_DROP_REASONS, MiningStage, StageContractError
from mosear.mine.worker import is_done, mine_shard


class Odd(MiningStage):
    """Sets ``odd`` to a value Arrow cannot store (a complex number) on one key, a float elsewhere, and
    ``kind`` to a string on one key where the shard's first samples hold ints."""

    name = "odd"
    adds = ("odd", "kind")

    def __init__(self, bad_key: str = "", str_key: str = ""):
        self.bad_key, self.str_key = bad_key, str_key

    def process(self, sample):
        sample["odd"] = complex(1, 2) if sample["key"] == self.bad_key else 0.5
        sample["kind"] = "text" if sample["key"] == self.str_key else 3
        return sample


class Vectorish(MiningStage):
    name = "vectorish"
    features = {"vec": "audio"}

    def __init__(self, bad_key: str = ""):
        self.bad_key = bad_key

    def process(self, sample):
        sample["vec"] = "loud" if sample["key"] == self.bad_key else np.ones(3, np.float32)
        return sample


def test_unstorable_value_drops_that_sample_not_the_shard(real_samples, sample_shards, tmp_path):
    from mosear.shards.reader import list_shards

    shard = list_shards(sample_shards)[0]
    keys = [s["key"] for s in real_samples]
    pipe = StagePipeline([Odd(bad_key=keys[2], str_key=keys[5]), Vectorish(bad_key=keys[6])])
    stats = mine_shard(shard, tmp_path, pipe, batch_size=3, config_hash="h")
    assert stats["status"] == "ok", stats["error"]  # before: the whole shard failed writing its evidence
    assert (stats["samples_in"], stats["samples_out"], stats["dropped"]) == (8, 5, 3)
    audit = pd.read_parquet(tmp_path / "evidence" / f"{shard.name.removesuffix('.tar')}.audit.parquet")
    got = {(r["key"], r["stage"], r["reason"]): r["detail"] for r in audit.to_dict("records")}
    assert set(got) == {(keys[2], "odd", "unstorable"), (keys[5], "odd", "unstorable"),
                        (keys[6], "vectorish", "bad_feature")}
    assert "'odd'" in got[(keys[2], "odd", "unstorable")] and "complex" in got[(keys[2], "odd", "unstorable")]
    assert "string" in got[(keys[5], "odd", "unstorable")] and "int64" in got[(keys[5], "odd", "unstorable")]
    ev = pd.read_parquet(tmp_path / "evidence" / f"{shard.name.removesuffix('.tar')}.parquet")
    assert sorted(ev["key"]) == sorted(set(keys) - {keys[2], keys[5], keys[6]})
    assert pipe.stats["odd"].dropped == {"unstorable": 2} and pipe.stats["vectorish"].dropped == {"bad_feature": 1}
    assert set(audit["reason"]) <= set(PIPELINE_DROP_REASONS)


def test_ints_widen_to_floats_and_missing_values_are_kept(real_samples):
    values = iter([1, 2.5, None])

    class Widening(MiningStage):
        name = "widening"
        adds = ("w",)

        def process(self, sample):
            sample["w"] = next(values)
            return sample

    kept, audit = StagePipeline([Widening()]).run_batch([dict(s) for s in real_samples[:3]])
    assert audit == [] and [s["w"] for s in kept] == [1, 2.5, None]


@pytest.mark.parametrize("attrs, match", [
    ({"features": {"f": "smell"}}, "modality must be one of"),
    ({"features": ["f"]}, "features must be a mapping"),
    ({"adds": "f"}, "adds must be a tuple"),
    ({"version": 2}, "version must be a non-empty string"),
])
def test_bad_declarations_are_contract_errors(attrs, match):
    stage = type("Bad", (MiningStage,), {"name": "bad", **attrs})()
    with pytest.raises(StageContractError, match=match):
        StagePipeline([stage])


def test_one_feature_declared_by_two_stages_is_refused():
    a = type("A", (MiningStage,), {"name": "a", "features": {"f": "audio"}})()
    b = type("B", (MiningStage,), {"name": "b", "features": {"f": "visual"}})()
    with pytest.raises(StageContractError, match="declared by stages a and b"):
        StagePipeline([a, b])


def test_builtin_features_are_declared_and_hf_declares_its_own_field():
    pipe = StagePipeline.from_spec(["audio_egemaps", "visual_fer", "text_lexicon",
                                    {"stage": "hf_classifier", "params": {"model_path": "m", "modality": "visual",
                                                                          "name": "hf_face"}}])
    assert pipe.feature_columns() == {"audio": ["audio_feats"], "visual": ["visual_feats", "hf_visual_probs"],
                                      "text": ["text_feats"]}
    assert pipe.versions()[-1] == "hf_face@transformers"


VERSIONED = '''from mosear.mine import MiningStage


class Versioned(MiningStage):
    name = "versioned"
    version = "{version}"
    adds = ("v",)

    def process(self, sample):
        sample["v"] = 1.0
        return sample
'''


def test_editing_a_stage_version_mines_again(sample_shards, tmp_path, monkeypatch):
    """A third-party stage's ``version`` is part of the mining hash: the same config with the stage's
    version edited no longer matches the committed evidence, and ``mine_shards`` mines it again."""
    from mosear.mine.run import evidence_hash, mine_shards
    from mosear.shards.reader import list_shards

    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    module = pkg / "versioned_stage.py"
    module.write_text(VERSIONED.format(version="1"))
    monkeypatch.syspath_prepend(str(pkg))
    cfg = load_config(MineConfig, None, {"shards": str(sample_shards), "output": str(tmp_path / "mined"),
                                         "stages": ["versioned_stage:Versioned"], "py_modules": [str(module)],
                                         "progress": False})
    shard = list_shards(sample_shards)[:1]
    h1, id1 = cfg.stage_hash(), output_fields(cfg)
    assert id1["stage_versions"] == ["versioned@1"]
    assert mine_shards(cfg, shard)[:2] == (1, 0)
    assert mine_shards(cfg, shard)[:2] == (0, 1)  # unchanged: resumed

    module.write_text(VERSIONED.format(version="2"))
    sys.modules.pop("versioned_stage", None)
    h2 = cfg.stage_hash()
    assert h2 != h1 and not is_done(cfg.output, shard[0], evidence_hash(cfg))
    assert changed({"config_fields": id1}, {"config_fields": output_fields(cfg)}) == ["config fields stage_versions"]
    assert mine_shards(cfg, shard)[:2] == (1, 0)  # edited: mined again
    import json

    stats = json.loads((Path(cfg.output) / "evidence" / f"{shard[0].name.removesuffix('.tar')}.stats.json").read_text())
    assert stats["config_hash"] == evidence_hash(cfg) and stats["stages"][0]["version"] == "2"
    sys.modules.pop("versioned_stage", None)


def test_unknown_stage_is_a_config_error_naming_it():
    from mosear.config import ConfigError

    cfg = load_config(MineConfig, None, {"stages": ["require_label", "no_such_stage"]})
    with pytest.raises(ConfigError, match="unknown mining stage 'no_such_stage'"):
        cfg.stage_hash()


def test_builtin_stages_are_listed_once(repo_root, tmp_path, monkeypatch, capsys):
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert ENTRY_POINT_GROUP not in pyproject["project"].get("entry-points", {})
    for name in BUILTIN_STAGES:
        assert load_stage_class(name).name == name
    # a third-party package that gives a built-in's name to another class is refused, by name
    dist = tmp_path / "rogue-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rogue\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\naudio_egemaps = rogue:Fake\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyError, match="rogue registers 'rogue:Fake'"):
        load_stage_class("audio_egemaps")
    from mosear.cli import main

    assert main(["mine", "--list-stages"]) == 2
    assert "rename that stage" in capsys.readouterr().err


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(package)}
    return out


def test_no_import_cycles_in_mining(repo_root):
    root = repo_root / "mosear" / "mine"
    graph = {}
    for p in sorted(root.rglob("*.py")):
        mod = "mosear." + ".".join(p.relative_to(repo_root / "mosear").with_suffix("").parts)
        graph[mod.removesuffix(".__init__")] = _imports(p, "mosear.mine")
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            assert state.get(n) != 1, f"import cycle: {' -> '.join(path + [m, n])}"
            if n in graph and not state.get(n):
                visit(n, path + [m])
        state[m] = 2

    for m in graph:
        if not state.get(m):
            visit(m, [])
