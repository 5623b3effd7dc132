"""Every bad input of the issue ends in quarantine.parquet with its reason; the good ones are written;
inputs = written + quarantined."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from mosear.config import load_config
from mosear.shards.config import ShardConfig
from mosear.shards.reader import iter_samples, list_shards

SMALL = {"num_frames": 4, "height": 32, "width": 32, "progress": False, "workers": 2}
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def bad_corpus(samples_dir, tmp_path_factory):
    """A corpus folder with one of each bad input, plus good clips with awkward names.

    Returns (root, manifest, expected) where expected maps key -> reason (None: must be written).
    """
    base = tmp_path_factory.mktemp("bad")
    root = base / "corpus"
    root.mkdir()
    rav = samples_dir / "ravdess" / "01-01-03-01-01-02-05.mp4"
    crema = samples_dir / "crema_d_extra" / "sad_correct.mp4"
    rows: list[tuple[str, str, str | None]] = []  # (path, clip_id or "", label)

    shutil.copy(rav, root / "good clip with spaces.mp4")
    rows.append(("good clip with spaces.mp4", "", "happy"))
    shutil.copy(crema, root / "été ünïcode 悲しい.mp4")
    rows.append(("été ünïcode 悲しい.mp4", "", "sad"))
    shutil.copy(samples_dir / "crema_d" / "1001_DFA_ANG_XX.flv", root / "1001_DFA_ANG_XX.flv")  # FLV/VP6/MP3
    rows.append(("1001_DFA_ANG_XX.flv", "", "angry"))
    (root / "empty.mp4").write_bytes(b"")
    rows.append(("empty.mp4", "", "sad"))
    data = rav.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: int(len(data) * 0.7)])  # moov first: stops early
    rows.append(("truncated.mp4", "", "happy"))
    (root / "truncated_head.mp4").write_bytes(data[:2000])  # cut inside the header: no frame decodes
    rows.append(("truncated_head.mp4", "", "happy"))
    _ffmpeg("-i", str(rav), "-c", "copy", str(base / "moov_last.mp4"))  # default mp4 mux: index at the end
    (root / "truncated_no_index.mp4").write_bytes((base / "moov_last.mp4").read_bytes()[:30000])
    rows.append(("truncated_no_index.mp4", "", "happy"))
    _ffmpeg("-i", str(rav), "-an", "-c", "copy", str(root / "no_audio.mp4"))
    rows.append(("no_audio.mp4", "", "happy"))
    _ffmpeg("-i", str(rav), "-vn", "-c", "copy", str(root / "no_video.mp4"))
    rows.append(("no_video.mp4", "", "happy"))
    (root / "notes.mp4").write_text("this is a text file, not a video\n")
    rows.append(("notes.mp4", "", "happy"))
    (root / "folder.mp4").mkdir()  # unreadable as a file, also as root
    rows.append(("folder.mp4", "", "happy"))
    os.symlink(root / "deleted_target.mp4", root / "dangling.mp4")  # unreadable: dangling link
    rows.append(("dangling.mp4", "", "happy"))
    rows.append(("listed_but_absent.mp4", "", "happy"))
    if not IS_ROOT:  # permissions do not stop root; the folder and the link cover unreadable then
        shutil.copy(rav, root / "locked.mp4")
        os.chmod(root / "locked.mp4", 0)
        rows.append(("locked.mp4", "", "happy"))
    shutil.copy(rav, base / "outside.mp4")
    rows.append(("../outside.mp4", "", "happy"))
    rows.append((str(base / "outside.mp4"), "outside_abs", "happy"))
    shutil.copy(rav, root / "dup_a.mp4")
    shutil.copy(crema, root / "dup_b.mp4")
    rows.append(("dup_a.mp4", "dup", "happy"))
    rows.append(("dup_b.mp4", "dup", "sad"))
    rows.append(("", "", "happy"))  # a manifest row without a path

    manifest = base / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "clip_id", "label", "split"])
        for path, cid, label in rows:
            w.writerow([path, cid, label, "train"])

    from mosear.adapters import safe_id

    def k(name: str) -> str:
        return "bad__" + safe_id(name)

    expected = {
        k("good clip with spaces"): None, k("été ünïcode 悲しい"): None, k("1001_DFA_ANG_XX"): None,
        k("empty"): "empty_file", k("truncated"): "truncated", k("truncated_head"): "decode_error",
        k("truncated_no_index"): "corrupt",
        k("no_audio"): "no_audio", k("no_video"): "no_video", k("notes"): "corrupt", k("folder"): "not_a_file",
        k("dangling"): "missing", k("listed_but_absent"): "missing", k("outside"): "outside_root",
        k("outside_abs"): "outside_root", k("dup"): None, "bad__row21": "bad_manifest_row",
    }
    if not IS_ROOT:
        expected[k("locked")] = "unreadable"
    return root, manifest, expected, len(rows)


def _cfg(root, manifest, out, **kw) -> ShardConfig:
    return load_config(ShardConfig, overrides={
        "sources": [{"adapter": "generic", "root": str(root), "manifest": str(manifest), "dataset": "bad"}],
        "output": str(out), **SMALL, **kw})


def test_quarantined_inputs_beyond_the_bound_fail_the_stage(bad_corpus, ray_local, tmp_path):
    """Catches: data errors that never fail a stage (mutation: the ``max_item_error_fraction`` check in
    ``run_shard`` removed): a corpus that is mostly broken would commit as ``complete``. With the default 0
    the stage fails (exit 1) naming the counts by reason, writes quarantine and ``run.json`` (``failed``) and
    no ``commit.json``; raising the bound commits the same shards without rebuilding them."""
    from mosear.identity import read_marker
    from mosear.orchestrate.errors import StageFailedError, exit_code
    from mosear.shards.run import run_shard

    root, manifest, _expected, n_rows = bad_corpus
    out = tmp_path / "out"
    with pytest.raises(StageFailedError, match=r"more than max_item_error_fraction=0\.0 allows") as info:
        run_shard(_cfg(root, manifest, out, samples_per_shard=4))
    assert exit_code(info.value) == 1 and f"of {n_rows} failed" in str(info.value)
    assert read_marker(out) is None and (out / "quarantine.parquet").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and sum(run["totals"]["failures"].values()) == run["totals"]["quarantined"] > 0
    again = run_shard(_cfg(root, manifest, out, samples_per_shard=4, max_item_error_fraction=1.0))
    assert again.shards_skipped == again.shards and read_marker(out)["status"] == "complete"


def test_bad_inputs_quarantined(bad_corpus, ray_local, tmp_path):
    from mosear.shards.run import run_shard

    root, manifest, expected, n_rows = bad_corpus
    result = run_shard(_cfg(root, manifest, tmp_path / "out", samples_per_shard=4, max_item_error_fraction=1.0))
    assert result.inputs == n_rows
    assert result.inputs == result.written + result.quarantined

    q = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    reasons = {}
    for r in q:
        assert r["error"], r  # every row says why
        reasons.setdefault(r["key"], []).append(r["reason"])
    written = {s["key"]: s for s in iter_samples(list_shards(tmp_path / "out"))}

    for key, reason in expected.items():
        if key == "bad__row21":
            key = next(k for k in reasons if "bad_manifest_row" in reasons[k])
        if reason is None:
            assert key in written, (key, reasons.get(key))
        else:
            assert reason in reasons.get(key, []), (key, reason, reasons.get(key))
            if reason != "duplicate_key":
                assert key not in written
    # the duplicate: the first by path is written, the second is quarantined naming the first
    assert reasons["bad__dup"] == ["duplicate_key"] and written["bad__dup"]["meta"]["source"] == "dup_a.mp4"
    dup_row = next(r for r in q if r["key"] == "bad__dup")
    assert "dup_a.mp4" in dup_row["error"] and dup_row["path"].endswith("dup_b.mp4")
    assert len(written) == 4 and result.written == 4
    assert result.failures["outside_root"] == 2 and result.failures["missing"] == 2
    summary = result.summary()
    assert f"{n_rows} inputs = 4 written + {n_rows - 4} quarantined" in summary and "empty_file: 1" in summary
    assert "clips/s" in summary and " h (" in summary

    # awkward names keep their original path in the metadata; keys are [A-Za-z0-9_-]
    uni = next(s for s in written.values() if s["meta"]["source"] == "été ünïcode 悲しい.mp4")
    assert uni["key"].startswith("bad__ete_unicode-") and uni["meta"]["label"] == "sad"
    flv = written["bad__1001_DFA_ANG_XX"]
    assert flv["frames"].shape == (4, 32, 32, 3) and flv["meta"]["codecs"]["video"] == "vp6f"
    assert abs(len(flv["audio"]) / 16000 - 2.235) < 0.1


def test_no_audio_kept_with_silence(bad_corpus, tmp_path):
    """missing_audio=silence keeps an audio-less clip with silent audio and has_audio=false."""
    from mosear.adapters import ClipRecord
    from mosear.shards.plan import ShardPlan
    from mosear.shards.run import build_shard

    root, manifest, _, _ = bad_corpus
    cfg = _cfg(root, manifest, tmp_path / "out", missing_audio="silence")
    clip = ClipRecord("bad", "no_audio", str(root / "no_audio.mp4"), "no_audio.mp4", "train", "happy", "happy")
    stats = build_shard(ShardPlan("train", 0, [clip.to_dict()]), cfg, tmp_path / "out", cfg.shard_hash())
    assert stats["num_samples"] == 1 and stats["num_failed"] == 0
    (sample,) = iter_samples(list_shards(tmp_path / "out"))
    assert sample["meta"]["has_audio"] is False
    assert np.all(sample["audio"] == 0) and abs(len(sample["audio"]) / 16000 - sample["meta"]["duration_s"]) < 0.01
    assert sample["frames"].shape == (4, 32, 32, 3) and sample["frames"].std() > 5
