"""A real local Ray cluster: ``ray start --head``, ``ray job submit`` of the tiny training with the
runtime env in cluster/; the job is killed (``ray job stop``) after a checkpoint, the same command is
submitted again and resumes to the end, with its checkpoint; then the head is stopped.

The head is the shared test helper ``tests/ray_head.py`` (own ports and temp dir, stopped by ending
its own processes rather than ``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_head import local_ray_cluster

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_ray_job_submit_tiny_training(train_shards, repo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    with local_ray_cluster(num_cpus=2, timeout_s=180) as address:
        out = tmp_path / "out"
        storage = tmp_path / "ckpt"

        def run() -> Path:  # the run folder is {name}-{run_id} (run_id: digest of config and data)
            return next(iter(sorted(storage.glob("tiny-*"))), storage / "tiny-none")

        def submit(submission_id: str, *extra: str) -> subprocess.CompletedProcess:
            cmd = [ray_bin, "job", "submit", "--address", address, "--submission-id", submission_id,
                   "--runtime-env", "cluster/runtime_env.yaml", *extra,
                   "--", "python", "-m", "mosear.cli", "train", "--config", "train-tiny.yaml",
                   f"shards=[{train_shards}]", f"output={out}", f"storage_path={storage}", "max_steps=80",
                   "checkpoint_every=10", "progress=false", "torch_threads=1"]
            return subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)

        # 1. Submit, and kill the whole job (`ray job stop`) once its step-10 checkpoint exists.
        first = submit("mosear-tiny-1", "--no-wait")
        assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
        deadline = time.time() + 400
        while not (run() / "checkpoint_00000010" / "train_state.json").is_file():
            assert time.time() < deadline, "no step-10 checkpoint within 400 s"
            time.sleep(0.5)
        stop = subprocess.run([ray_bin, "job", "stop", "--address", address, "mosear-tiny-1"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        status = subprocess.run([ray_bin, "job", "status", "--address", address, "mosear-tiny-1"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert "was stopped" in status.stdout + status.stderr
        assert not (run() / "checkpoint_00000080").exists(), "the job finished before it could be stopped"

        # 2. The same command again resumes from the last checkpoint and finishes.
        second = submit("mosear-tiny-2")
        log = second.stdout + second.stderr
        assert second.returncode == 0, log[-4000:]
        assert "succeeded" in log
        resumed = int(re.search(r'"resumed_from_step": (\d+)', log).group(1))
        assert resumed >= 10
        state = json.loads((run() / "checkpoint_00000080" / "train_state.json").read_text())
        assert state["step"] == 80
        assert (run() / "checkpoint_00000080" / "adapter" / "adapter" / "adapter_model.safetensors").is_file()
        assert (out / "adapter" / "model_config.json").is_file()
        steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, 81))  # no gaps, no duplicates across the kill
