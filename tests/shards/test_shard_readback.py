"""The sample corpus sharded once, read back by our reader, upstream webdataset and Ray Data."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mosear.shards import ShardIterableDataset
from mosear.shards.reader import decode_wav, iter_samples, list_shards

RAVDESS_LABELS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry", "06": "fear", "07": "disgust", "08": "surprise"}


def _expected_label(key: str) -> str:
    if key.startswith("ravdess__"):
        return RAVDESS_LABELS[key.split("__")[1].split("-")[2]]
    name = key.split("__")[1]
    crema = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
    if name[:4].isdigit():  # a CREMA-D id: ActorID_Sentence_Emotion_Level
        return crema[name.split("_")[2]]
    return {"disgusted": "disgust"}.get(name.split("_")[0], name.split("_")[0])


def test_layout_and_counts(sample_shards):
    cfg, result = sample_shards
    out = cfg.output
    assert result.inputs == 33 and result.written == 33 and result.quarantined == 0
    shards = list_shards(out)
    assert [p.name for p in shards] == [f"train-{i:06d}.tar" for i in range(11)]
    for tar in shards:
        stats = json.loads(tar.with_name(tar.name.replace(".tar", ".stats.json")).read_text())
        assert stats["config_hash"] == cfg.shard_hash() and stats["num_samples"] == 3
        assert tar.stat().st_size == stats["tar_bytes"]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["totals"]["written"] == 33
    assert pq.read_table(out / "quarantine.parquet").num_rows == 0
    assert not list(out.glob(".*tmp*"))


def test_own_reader(sample_shards):
    cfg, _ = sample_shards
    samples = list(iter_samples(list_shards(cfg.output)))
    assert len(samples) == 33
    assert [s["key"] for s in samples] == sorted(s["key"] for s in samples)
    for s in samples:
        meta = s["meta"]
        assert s["frames"].dtype == np.uint8 and s["frames"].shape == (4, 32, 48, 3)
        assert s["frames"].std() > 5  # real picture content, not a blank fill
        assert s["sample_rate"] == 16000 and s["audio"].dtype == np.float32
        # the audio track lasts as long as the clip (AAC/MP3 priming may add a few tens of ms)
        assert abs(len(s["audio"]) / 16000 - meta["duration_s"]) < 0.15, s["key"]
        assert np.abs(s["audio"]).max() > 0.01 and meta["has_audio"]
        assert meta["label"] == _expected_label(s["key"]), s["key"]
        assert meta["key"] == s["key"] and len(meta["frame_times_s"]) == 4
        assert meta["frame_times_s"] == sorted(meta["frame_times_s"])
    flv = next(s for s in samples if s["key"] == "crema_d__1001_DFA_ANG_XX")
    assert flv["meta"]["codecs"]["video"] == "vp6f" and flv["meta"]["codecs"]["audio"].startswith("mp3")
    assert flv["meta"]["transcript"] == "Don't forget a jacket" and flv["meta"]["orig_label"] == "ANG"
    rav = next(s for s in samples if s["key"] == "ravdess__01-01-03-01-01-02-05")
    assert rav["meta"]["extra"]["intensity"] == "normal" and rav["meta"]["speaker"] == "ravdess_05"
    assert rav["meta"]["width"] == 480 and rav["meta"]["height"] == 270


def test_index_matches_tar(sample_shards):
    cfg, _ = sample_shards
    for tar in list_shards(cfg.output):
        index = pq.read_table(tar.with_name(tar.name.replace(".tar", ".index.parquet"))).to_pylist()
        keys = [s["key"] for s in iter_samples([tar])]
        assert [r["key"] for r in index] == keys
        data = tar.read_bytes()
        for r in index:  # offsets point at each sample's first member header
            assert data[r["offset"] : r["offset"] + len(r["key"])].decode() == r["key"]


def test_upstream_webdataset(sample_shards):
    import webdataset as wds

    cfg, _ = sample_shards
    urls = [str(p) for p in list_shards(cfg.output)]
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode():
        frames = sample["frames.npy"]
        meta = sample["json"]
        assert isinstance(frames, np.ndarray) and frames.shape == (4, 32, 48, 3) and frames.dtype == np.uint8
        audio, rate = decode_wav(sample["wav"])
        assert rate == 16000 and abs(len(audio) / rate - meta["duration_s"]) < 0.15
        assert meta["label"] == _expected_label(sample["__key__"])
        n += 1
    assert n == 33


def test_ray_read_webdataset(sample_shards, ray_local):
    import ray.data

    cfg, _ = sample_shards
    ds = ray.data.read_webdataset([str(p) for p in list_shards(cfg.output)])
    rows = ds.take_all()
    assert len(rows) == 33
    for row in rows:
        frames = row["frames.npy"]
        assert np.asarray(frames).shape == (4, 32, 48, 3)
        meta = row["json"]
        assert meta["label"] == _expected_label(row["__key__"])
        audio, rate = decode_wav(row["wav"])
        assert rate == 16000 and len(audio) > 16000


def test_iterable_dataset_splits_workers(sample_shards):
    import torch

    cfg, _ = sample_shards
    ds = ShardIterableDataset(cfg.output)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    keys = [s["key"] for s in loader]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 33
    first = next(iter(ds))
    assert isinstance(first["frames"], torch.Tensor) and first["frames"].shape == (4, 32, 48, 3)
    # two ranks read disjoint shards that together are all of them
    r0 = [s["key"] for s in ShardIterableDataset(cfg.output, rank=0, world_size=2)]
    r1 = [s["key"] for s in ShardIterableDataset(cfg.output, rank=1, world_size=2)]
    assert not set(r0) & set(r1) and len(r0) + len(r1) == 33


def test_list_shards_ignores_uncommitted(sample_shards, tmp_path):
    import shutil

    cfg, _ = sample_shards
    for p in list_shards(cfg.output)[:2]:
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(cfg.output / "train-000000.stats.json", tmp_path)
    assert [p.name for p in list_shards(tmp_path)] == ["train-000000.tar"]
    with pytest.raises(ValueError, match="config"):
        list_shards(tmp_path, config_hash="0" * 16)
