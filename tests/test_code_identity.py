"""Identity covers code: a fixed bug invalidates what the buggy code cached (issue 22, item 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mosear
from mosear.identity import changed, code_fingerprint


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "mosear"
    shutil.copytree(Path(mosear.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_code_fingerprint_follows_the_modules_a_stage_runs(tmp_path):
    """Catches: a code identity that ignores the source (only ``__version__``, mutation: return a
    constant), one that misses modules reached through function-level or ``from pkg import mod`` imports
    (``media/decode.py`` is imported inside ``build_shard``), or data files beside them
    (``synonyms.tsv``); and one so coarse that editing the report invalidates every shard."""
    root = _copy(tmp_path)

    def fp(module: str) -> str:
        code_fingerprint.cache_clear()
        return code_fingerprint(module, root)["digest"]

    shard0, eval0 = fp("mosear.shards.run"), fp("mosear.evaluate.runner")
    assert fp("mosear.shards.run") == shard0  # deterministic
    decode = root / "media" / "decode.py"
    decode.write_text(decode.read_text() + "\n# a fixed bug\n")
    shard1 = fp("mosear.shards.run")
    assert shard1 != shard0, "an edit to the decoder must change the shard stage's code identity"
    report = root / "evaluate" / "report.py"
    report.write_text(report.read_text() + "\n# a report tweak\n")
    assert fp("mosear.shards.run") == shard1, "the shard stage never imports the report"
    syn = root / "evaluate" / "synonyms.tsv"
    syn.write_text(syn.read_text() + "\n")
    assert fp("mosear.evaluate.runner") != eval0
    code_fingerprint.cache_clear()


def test_stage_identity_records_the_code_and_says_so(tmp_path):
    """Catches: ``stage_identity`` without the ``code`` entry (a marker then matches across a bug fix),
    and ``changed`` not naming it (the user sees no reason for the recompute)."""
    from mosear.identity import identity_digest

    old = {"stage": "shard", "version": "0.1.0", "code": "a" * 64, "config": "c", "inputs": {}}
    new = dict(old, code="b" * 64)
    assert identity_digest(old) != identity_digest(new)
    assert changed(old, new) == ["the stage's code (mosear source files it runs)"]


def test_model_folders_are_identified_by_their_bytes(tmp_path):
    """Catches: model weights identified by path (mutation: ``model_paths`` returning ``[]``, or
    ``fingerprint_checkpoint`` hashing only the model config): new weights copied over the same folder
    would keep serving the old model's cached units, shards' evidence or training run. Covers the eval
    base model, a base model an adapter's ``model_config.json`` names, the train base model and a mining
    stage's ``model_path`` (``hf_classifier``)."""
    from mosear.config import load_config
    from mosear.evaluate.units import fingerprint_checkpoint
    from mosear.identity import DigestMemo, model_paths
    from mosear.mine.config import MineConfig
    from mosear.mine.spec import SPEC as MINE
    from mosear.train.config import TrainConfig
    from mosear.train.spec import SPEC as TRAIN

    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"\0" * 64)
    model = {"preset": "hf-av", "model_path": str(base)}
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "model_config.json").write_text(json.dumps(model))
    assert model_paths({"model": model, "stages": [{"params": {"model_path": "org/hub-id"}}]}) == [base.resolve()]
    train = load_config(TrainConfig, overrides={"shards": [str(tmp_path)], "model": model, "output": str(tmp_path / "t")})
    mine = load_config(MineConfig, overrides={"shards": str(tmp_path), "output": str(tmp_path / "m"), "stages": [
        {"stage": "hf_classifier", "params": {"model_path": str(base), "modality": "audio"}}]})
    assert base.resolve() in TRAIN.inputs(train) and base.resolve() in MINE.inputs(mine)

    before = (fingerprint_checkpoint("base", model, DigestMemo()), fingerprint_checkpoint(str(adapter), {}, DigestMemo()))
    (base / "model.safetensors").write_bytes(b"\1" * 64)  # other weights, same path and size
    after = (fingerprint_checkpoint("base", model, DigestMemo()), fingerprint_checkpoint(str(adapter), {}, DigestMemo()))
    assert before[0] != after[0] and before[1] != after[1]


def test_remote_inputs_are_versioned_or_never_cached(tmp_path, caplog):
    """Catches: ``://`` inputs left out of the identity (mutation: the ``remote_inputs`` loop in
    ``stage_identity`` removed): a stage reading ``s3://bucket/shards`` would be served from cache after the
    objects changed. Without a version from the store the identity carries a fresh nonce (never equal
    twice) and the log says the result is not cached; a store that reports a version records it."""
    from mosear.config import load_config
    from mosear.identity import identity_digest, remote_inputs, remote_version, stage_identity
    from mosear.train.config import TrainConfig
    from mosear.train.spec import SPEC

    cfg = load_config(TrainConfig, overrides={"shards": ["s3://no-such-bucket-mosear/shards"],
                                              "output": str(tmp_path / "t")})
    assert remote_inputs(cfg) == ["s3://no-such-bucket-mosear/shards"]
    with caplog.at_level("WARNING", logger="mosear.identity"):
        a, b = stage_identity(SPEC, cfg), stage_identity(SPEC, cfg)
    assert "uncacheable" in a and identity_digest(a) != identity_digest(b)
    assert "no ETag or version id: its result is not cached" in caplog.text
    # fsspec's in-memory store reports no ETag either; a file:// URL reports none: both refused
    assert remote_version("memory://x/none") is None
