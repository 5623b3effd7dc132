"""What a clip folder holds, all of it counted: containers libav opens (MPEG-TS, raw streams) are clips,
listed extensions too; everything else is reported as skipped; decoder warnings are stored per clip."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from mosear.config import load_config
from mosear.shards.config import ShardConfig
from mosear.shards.reader import iter_samples, list_shards

SMALL = {"num_frames": 4, "height": 32, "width": 32, "progress": False, "workers": 1, "missing_audio": "silence"}
RAV = "ravdess/01-01-03-01-01-02-05.mp4"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def folder(samples_dir, tmp_path_factory):
    """A user's folder: mp4, MPEG-TS (.ts/.m2ts/.mts), a raw H.264 stream, a rotated phone clip, a clip
    with damaged packets, a `.dat` clip, an audio-only take, notes, a hidden file."""
    root = tmp_path_factory.mktemp("folder") / "clips"
    root.mkdir()
    src = samples_dir / RAV
    shutil.copy(src, root / "plain.mp4")
    for ext in ("ts", "m2ts", "mts"):
        _ffmpeg("-i", str(src), "-c", "copy", "-f", "mpegts", str(root / f"broadcast_{ext}.{ext}"))
    _ffmpeg("-i", str(src), "-an", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(root / "raw.h264"))
    _ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v", "rotate=90", str(root / "phone.mov"))
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for off in range(len(data) // 3, len(data) // 3 + 40000, 4000):  # damage packets, keep the index
        data[off:off + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    (root / "damaged.mp4").write_bytes(bytes(data))
    shutil.copy(src, root / "capture.dat")  # an mp4 under a name only the user knows
    shutil.copy(samples_dir / "ravdess_sync" / "03-01-03-01-01-02-05.flac", root / "voice.flac")
    (root / "notes.txt").write_text("shot on my phone\n")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "old takes").mkdir()  # a sub-folder is not an input; its files are
    (root / "folder.mp4").mkdir()  # ...unless it is named like a clip: quarantined, not lost
    return root


def _run(root, out, **kw):
    from mosear.shards.run import run_shard

    cfg = load_config(ShardConfig, overrides={"sources": [{"adapter": "generic", "root": str(root), **kw}],
                                              "output": str(out), "max_item_error_fraction": 1.0, **SMALL})
    return run_shard(cfg)


def test_every_file_is_counted(folder, tmp_path, ray_local):
    res = _run(folder, tmp_path / "out")
    assert res.inputs == 12 == res.written + res.quarantined + res.skipped
    assert res.written == 7 and res.quarantined == 1 and res.skipped == 4  # .dat not listed: skipped
    assert res.failures == {"not_a_file": 1}
    assert res.skipped_report["by_reason"] == {"audio_only": 1, "hidden": 1, "unknown_extension": 2}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["skipped"]["count"] == 4 and run["totals"]["skipped"] == 4
    assert any(n.startswith("voice.flac") for n in run["skipped"]["first"])
    summary = res.summary()
    assert "12 inputs = 7 written + 1 quarantined (not_a_file: 1) + 4 skipped" in summary
    assert "capture.dat (unknown_extension)" in summary and "voice.flac (audio_only)" in summary

    samples = {s["key"]: s for s in iter_samples(list_shards(tmp_path / "out"))}
    assert {"generic__broadcast_ts", "generic__broadcast_mts", "generic__raw", "generic__phone"} <= set(samples)
    index = [r for p in (tmp_path / "out").glob("*.index.parquet") for r in pq.read_table(p).to_pylist()]
    rows = {r["source"]: r for r in index}
    assert rows["phone.mov"]["rotation"] == 90 and rows["plain.mp4"]["rotation"] == 0
    assert rows["phone.mov"]["mirrored"] is False
    assert samples["generic__phone"]["meta"]["rotation"] == 90
    # the raw stream has no container duration: measured from its packets
    assert rows["raw.h264"]["duration_s"] == pytest.approx(rows["plain.mp4"]["duration_s"], abs=0.1)
    assert rows["raw.h264"]["has_audio"] is False


def test_decoder_warnings_stored_per_clip(folder, tmp_path, ray_local):
    res = _run(folder, tmp_path / "out")
    index = {r["source"]: r for p in (tmp_path / "out").glob("*.index.parquet") for r in pq.read_table(p).to_pylist()}
    bad, good = index["damaged.mp4"], index["plain.mp4"]
    assert bad["status"] == "ok" and bad["num_warnings"] > 0 and bad["warnings"]
    assert any("[h264]" in w or "video packet" in w for w in bad["warnings"])
    assert good["num_warnings"] == 0 and good["warnings"] == []
    meta = next(s["meta"] for s in iter_samples(list_shards(tmp_path / "out")) if s["meta"]["source"] == "damaged.mp4")
    assert meta["num_warnings"] == bad["num_warnings"] and meta["warnings"] == bad["warnings"]
    stats = [json.loads(p.read_text())["warnings"] for p in (tmp_path / "out").glob("*.stats.json")]
    assert sum(s["samples"] for s in stats) == res.warned >= 1
    assert sum(s["messages"] for s in stats) == res.warning_messages >= bad["num_warnings"]
    assert f"{res.warned} written with decoder warnings" in res.summary()


def test_listed_extensions_are_clips(folder, tmp_path, ray_local):
    res = _run(folder, tmp_path / "out", extensions=["DAT"])
    assert res.written == 8 and res.skipped == 3 and res.inputs == 12
    (s,) = [s for s in iter_samples(list_shards(tmp_path / "out")) if s["meta"]["source"] == "capture.dat"]
    assert s["frames"].shape == (4, 32, 32, 3)
