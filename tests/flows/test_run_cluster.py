"""``mosear run --mode cluster`` end to end, as a user runs it: the real CLI in a subprocess, every stage
submitted to a real Ray head (``ray start`` on its own ports and temp dir, :mod:`ray_head`), Prefect's
temporary server; then the same command in embedded mode on the same inputs.

Issue 24: the cluster run computed every stage, then failed with exit 2 because the eval job's
``name=path`` checkpoints had been made one absolute path (``/cwd/lora=/.../adapter``), so the method
names were lost and the recorded identity never matched the driver's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from ray_head import local_ray_cluster

from mosear.orchestrate.registry import stage_available

pytestmark = [
    pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(1800),  # ~8 min at load 18-28 (2026-12-07)
    pytest.mark.skipif(not all(stage_available(s) for s in ("shard", "mine", "train", "eval")), reason="needs all stages"),
]

# as small as the stages allow (tests/flows/test_faults.py): 4 frames of 64x64, 2 training steps, one setting
SMALL = ["shard.num_frames=4", "shard.height=64", "shard.width=64", "shard.workers=2", "mine.crossfit.n_folds=2",
         "train.max_steps=2", "train.checkpoint_every=2", "train.warmup_steps=1",
         "eval.settings=[{name: ar_off}]", "eval.max_new_tokens=4", "eval.report=false"]


def _mosear(args: list[str], cwd: Path, log: Path, timeout: float) -> tuple[int, str, float]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.run([sys.executable, "-m", "mosear.cli", "run", *args], cwd=cwd, env=env, stdout=fh,
                           stderr=subprocess.STDOUT, timeout=timeout, start_new_session=True)
    return p.returncode, log.read_text(), time.perf_counter() - t0


def _metrics(work: Path) -> pd.DataFrame:
    df = pd.read_parquet(work / "reports" / "metrics.parquet")
    keep = [c for c in df.columns if df[c].dtype.kind in "fiub" or c in ("checkpoint", "setting", "subset", "benchmark", "metric")]
    return df[keep].sort_values([c for c in keep if df[c].dtype.kind == "O"] or keep).reset_index(drop=True)


def test_mosear_run_in_cluster_mode_finishes_with_named_checkpoints_and_embedded_metrics(samples_dir, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(samples_dir, corpus)
    text = (corpus / "corpus_splices.yaml").read_text().replace("max_pairs: null", "max_pairs: 6")
    (corpus / "corpus.yaml").write_text(text)
    with local_ray_cluster(num_cpus=2) as address:
        # a relative --workdir (resolved against the command's folder, as a user types it)
        rc, out, took = _mosear(["--mode", "cluster", "--ray-address", address, "--corpus", "corpus/corpus.yaml",
                                 "--workdir", "wc", *SMALL], tmp_path, tmp_path / "cluster.log", 1500)
        assert rc == 0, out[-5000:]
        print(f"cluster-mode run: {took:.1f} s, exit {rc}")
        work = tmp_path / "wc"
        run = __import__("json").loads((work / "reports" / "run.json").read_text())
        assert "holds no committed result" not in out
        # the method names survived the trip to the cluster: one unit per named checkpoint
        assert set(_metrics(work)["checkpoint"]) == {"lora", "mose"}, run
        # the same command with the absolute workdir: every stage served from its cache (same identity)
        rc2, out2, _ = _mosear(["--mode", "cluster", "--ray-address", address, "--corpus", str(corpus / "corpus.yaml"),
                                "--workdir", str(work), *SMALL], tmp_path, tmp_path / "cluster2.log", 600)
        assert rc2 == 0, out2[-5000:]
        for stage in ("shard", "mine", "train:lora", "train:mose", "eval"):
            assert f"{stage} 0.0 s (cached)" in out2, out2[-3000:]
    # embedded mode on the same inputs (the cluster run's shards, mined benchmark and checkpoints, copied):
    # the eval stage computes the same metrics (the whole pipeline embedded would double this test's time)
    we = tmp_path / "we"
    for folder in ("shards", "mined", "train"):
        shutil.copytree(work / folder, we / folder)
    rc3, out3, took3 = _mosear(["--stages", "eval", "--workdir", str(we), *SMALL], tmp_path, tmp_path / "embedded.log", 900)
    assert rc3 == 0, out3[-5000:]
    assert "eval 0.0 s (cached)" not in out3  # computed here, not served from the cluster run's records
    print(f"embedded eval: {took3:.1f} s")
    pd.testing.assert_frame_equal(_metrics(work), _metrics(we))
