"""The public writer API (the shard stage writes every shard with it, natural and spliced clips alike)."""

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



def _reference_tar(samples: list[ShardSample], members) -> bytes:
    """The writer as it was (tarfile, USTAR, no time/owner, members in contract order), for comparison."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            for ext, data in members(s):
                info = tarfile.TarInfo(f"{s.key}.{ext}")
                info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = (
                    len(data), 0o444, 0, 0, 0, "", "")
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tars_are_byte_identical_to_the_previous_writer_and_to_webdataset(tmp_path):
    """Keys that fit a ustar header give the bytes the previous writer gave; webdataset's TarWriter, set up
    for reproducible shards (mtime 0, no user/group, mode 0444, one member per call to keep the contract's
    member order), writes exactly our tars, a key past ustar's 100 characters included (which the
    previous writer could not store at all: the whole shard failed). docs/shard.md "Why tarfile"."""
    import io

    wds = pytest.importorskip("webdataset")

    short = [_sample("ravdess__a"), ShardSample(**{**_sample("crema_d__b").__dict__, "extra": {"mp4": b"\x00raw"}})]
    with ShardWriter(tmp_path / "s", "train", 0, config_hash="x") as w:
        for s in short:
            w.write(s)
    ours = (tmp_path / "s" / "train-000000.tar").read_bytes()
    assert ours == _reference_tar(short, tar_members)

    long_key = "generic__" + "k" * 120
    both = [*short, _sample(long_key)]
    with ShardWriter(tmp_path / "l", "train", 0, config_hash="x") as w:
        for s in both:
            w.write(s)
    ours = (tmp_path / "l" / "train-000000.tar").read_bytes()
    buf = io.BytesIO()
    tw = wds.TarWriter(buf, user="", group="", mode=0o444, mtime=0, encoder=False)
    for s in both:
        for ext, data in tar_members(s):
            tw.write({"__key__": s.key, ext: data})
    tw.close()
    assert buf.getvalue() == ours
    assert [x["key"] for x in iter_samples(list_shards(tmp_path / "l"))] == [s.key for s in both]


def tar_members(sample: ShardSample) -> list[tuple[str, bytes]]:
    """The members ShardWriter stores for ``sample`` (extension, bytes), in the order it stores them."""
    import tarfile
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        with ShardWriter(tmp, "t", 0, config_hash="x") as w:
            w.write(sample)
        with tarfile.open(Path(tmp) / "t-000000.tar") as tar:
            return [(m.name[len(sample.key) + 1:], tar.extractfile(m).read()) for m in tar.getmembers()]
