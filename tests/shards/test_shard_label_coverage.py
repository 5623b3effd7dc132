"""A partial download through the real `mosear shard` CLI: full label files, a few of the videos.

The corpus is written here in the releases' layouts (MER2024 per-split label CSVs, DFEW's fold files with
unpadded names) over a handful of real sample clips; every other label row has no clip, as after a
partial download."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from release_files import write_csv

MER_TRAIN = [f"sample_{i:08d}" for i in range(1, 21)]
MER_TEST1 = [f"sample_{i:08d}" for i in range(101, 111)]



def _corpus(tmp_path, samples_dir):
    clips = sorted((samples_dir / "ravdess").glob("*.mp4"))
    emos = ["happy", "sad", "angry", "worried", "surprise", "neutral"]
    write_csv(tmp_path / "MER2024" / "train-label.csv", ["name", "discrete", "valence"],
         [[n, emos[i % 6], "0.5"] for i, n in enumerate(MER_TRAIN)])
    write_csv(tmp_path / "MER2024" / "test1-label.csv", ["name", "discrete", "valence"],
         [[n, emos[i % 6], "-10"] for i, n in enumerate(MER_TEST1)])
    (tmp_path / "MER2024" / "README.txt").write_text("MER2024 release notes\n")  # not a clip: skipped once
    video = tmp_path / "MER2024"  # the label files sit beside the videos, as unpacked
    for name, src in zip([MER_TRAIN[0], MER_TRAIN[5], MER_TEST1[2], "sample_99999999"], clips):
        shutil.copy(src, video / f"{name}.mp4")  # sample_99999999: a video no label row names
    split = tmp_path / "DFEW" / "EmoLabel_DataSplit"
    write_csv(split / "train(single-labeled)" / "set_1.csv", ["video_name", "label"], [[str(i), str(i % 7 + 1)] for i in range(1, 9)])
    write_csv(split / "test(single-labeled)" / "set_1.csv", ["video_name", "label"], [[str(i), str(i % 7 + 1)] for i in range(9, 13)])
    (tmp_path / "DFEW" / "Clip").mkdir()
    for name, src in zip(["2.mp4", "10.mp4"], clips[4:]):  # unpadded, as the release names them
        shutil.copy(src, tmp_path / "DFEW" / "Clip" / name)
    (tmp_path / "corpus.yaml").write_text(
        "sources:\n"
        "  - {adapter: mer2023, dataset: mer2024, root: MER2024, manifest: MER2024/train-label.csv}\n"
        "  - {adapter: mer2023, dataset: mer2024, root: MER2024, manifest: MER2024/test1-label.csv}\n"
        "  - {adapter: dfew, root: DFEW/Clip, manifest: DFEW/EmoLabel_DataSplit, options: {fold: 1}}\n")
    return tmp_path / "corpus.yaml"


@pytest.mark.slow  # ~55 s on 2 shared cores: a CLI subprocess starts its own Ray
def test_partial_download_is_planned_not_decoded(tmp_path, samples_dir, repo_root):
    """Catches (issue 23 items 7, 8): label rows without a video planned into shards and quarantined at
    decode (94 of 104 tars empty), the summary not saying how many label rows have a clip, and videos no
    label row names ignored silently. The real CLI, its printed summary, run.json and the shard files."""
    corpus = _corpus(tmp_path, samples_dir)
    out = tmp_path / "shards"
    env = {**os.environ, "PYTHONPATH": str(repo_root), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mosear", "shard", f"corpus={corpus}", f"output={out}",
                           "num_frames=2", "height=16", "width=16", "progress=false", "workers=1",
                           "missing_audio=silence"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = proc.stdout
    print(summary)  # the report quotes it
    # 30 MER rows (3 clips) + 12 DFEW rows (2 clips) + 1 video no row names and a README (each listed by
    # both MER sources: counted once; the two label files beside them are the sources' own, not skipped)
    assert "5 of 42 label rows have a clip (sources.0 mer2023: 2 of 20, sources.1 mer2023: 1 of 10, " \
           "sources.2 dfew: 2 of 12); 37 missing" in summary
    assert "mosear shard: 44 inputs = 5 written + 37 quarantined (missing: 37) + 2 skipped" in summary
    assert "skipped (unknown_extension: 1, unlabelled: 1): README.txt (unknown_extension), " \
           "sample_99999999.mp4 (unlabelled)" in summary
    # no empty shard: one per split that has clips, each with samples
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*.stats.json"))]
    assert sorted(s["shard"] for s in stats) == ["test-000000", "test1-000000", "train-000000"]
    assert all(s["num_samples"] > 0 and s["num_failed"] == 0 for s in stats)
    q = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert {r["reason"] for r in q} == {"missing"} and {r["stage"] for r in q} == {"plan"}
    assert all("searched" in r["error"] and "/**/" in r["error"] for r in q)
    run = json.loads((out / "run.json").read_text())
    assert [(c["rows"], c["with_clip"]) for c in run["coverage"]] == [(20, 2), (10, 1), (12, 2)]
    assert run["totals"]["coverage"].startswith("5 of 42 label rows have a clip")
