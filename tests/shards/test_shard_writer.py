"""The public writer API other stages reuse (the mining stage writes spliced shards with it)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mosear.shards.reader import iter_samples, list_shards
from mosear.shards.writer import ShardSample, ShardWriter


def _sample(key, t=3, seconds=0.5, **meta):
    frames = np.random.default_rng(0).integers(0, 255, (t, 8, 12, 3), dtype=np.uint8)
    audio = np.sin(np.linspace(0, 2 * np.pi * 440 * seconds, int(16000 * seconds))).astype(np.float32) * 0.5
    return ShardSample(key, frames, audio, 16000, {"label": "angry", "duration_s": seconds, **meta})


def test_write_commit_and_read_back(tmp_path):
    with ShardWriter(tmp_path, "spliced", 3, config_hash="cafe") as w:
        w.write(_sample("ravdess__face05_voice03", origin="spliced", extra={"face_label": "angry"}))
        w.write(ShardSample(**{**_sample("ravdess__b").__dict__, "extra": {"mp4": b"\x00\x01raw"}}))
        w.fail("ravdess__c", "corrupt", "libav cannot open c.mp4", {"source": "c.mp4"})
    assert [p.name for p in list_shards(tmp_path)] == ["spliced-000003.tar"]
    stats = json.loads((tmp_path / "spliced-000003.stats.json").read_text())
    assert stats["config_hash"] == "cafe" and stats["num_samples"] == 2 and stats["failures"] == {"corrupt": 1}
    index = pq.read_table(tmp_path / "spliced-000003.index.parquet").to_pylist()
    assert [(r["key"], r["status"], r["reason"]) for r in index] == [
        ("ravdess__face05_voice03", "ok", None), ("ravdess__b", "ok", None), ("ravdess__c", "failed", "corrupt")]
    a, b = iter_samples(list_shards(tmp_path))
    assert a["frames"].shape == (3, 8, 12, 3) and a["meta"]["origin"] == "spliced"
    assert np.allclose(a["audio"], _sample("x").audio, atol=1e-4) and b["mp4"] == b"\x00\x01raw"


def test_exception_commits_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "train", 0, config_hash="x") as w:
            w.write(_sample("a"))
            raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["has.dot", "has space", "ümlaut", ""])
def test_bad_keys_rejected(tmp_path, key):
    with ShardWriter(tmp_path, "train", 0, config_hash="x") as w:
        with pytest.raises(ValueError, match="key"):
            w.write(_sample(key))


def test_duplicate_key_and_bad_frames(tmp_path):
    with ShardWriter(tmp_path, "train", 0, config_hash="x") as w:
        w.write(_sample("a"))
        with pytest.raises(ValueError, match="already"):
            w.write(_sample("a"))
        with pytest.raises(ValueError, match="uint8"):
            w.write(ShardSample("b", np.zeros((2, 4, 4, 3), np.float32), np.zeros(10, np.int16), 16000, {}))


def test_same_samples_same_bytes(tmp_path):
    for d in ("one", "two"):
        with ShardWriter(tmp_path / d, "train", 0, config_hash="x") as w:
            w.write(_sample("a"))
    assert (tmp_path / "one" / "train-000000.tar").read_bytes() == (tmp_path / "two" / "train-000000.tar").read_bytes()


def test_passthrough_keeps_the_original_bytes(samples_dir, tmp_path):
    from mosear.adapters import ClipRecord
    from mosear.config import load_config
    from mosear.shards.config import ShardConfig
    from mosear.shards.plan import ShardPlan
    from mosear.shards.run import build_shard

    flv = samples_dir / "crema_d" / "1001_DFA_ANG_XX.flv"
    cfg = load_config(ShardConfig, overrides={"corpus": str(samples_dir / "corpus.yaml"), "num_frames": 2,
                                              "height": 16, "width": 16, "passthrough": True})
    clip = ClipRecord("crema_d", flv.stem, str(flv), flv.name, "train", "ANG", "angry")
    build_shard(ShardPlan("train", 0, [clip.to_dict()]), cfg, tmp_path, cfg.shard_hash())
    (sample,) = iter_samples(list_shards(tmp_path))
    assert sample["flv"] == flv.read_bytes()
