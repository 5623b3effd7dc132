"""``mosear run`` killed mid-way and started again does not redo the stages it finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mosear.orchestrate.registry import stage_available

ARGS = [
    "--stages", "shard,mine", "--corpus", "datasets/samples/corpus.yaml",  # the natural clips only: quick
    "shard.num_frames=4", "shard.height=64", "shard.width=64", "mine.crossfit.n_folds=2",
]


def _run(workdir: Path, log: Path, repo: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "mosear.cli", "run", "--workdir", str(workdir), *ARGS],
        cwd=repo, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the run, its embedded Ray and its Prefect server
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(not (stage_available("shard") and stage_available("mine")), reason="needs shard and mine")
def test_killed_pipeline_resumes_without_redoing_finished_stages(tmp_path, repo_root):
    work = tmp_path / "w"
    log1 = tmp_path / "run1.log"
    proc = _run(work, log1, repo_root)
    try:
        # Wait until shard is recorded as finished and mine has started, then kill everything hard.
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if list((work / ".mosear-cache" / "keys").glob("shard-*")) and "mine: running" in log1.read_text():
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + log1.read_text()[-3000:]
        assert list((work / ".mosear-cache" / "keys").glob("shard-*")), log1.read_text()[-3000:]
        time.sleep(2.0)  # let mine get going
    finally:
        _kill_group(proc)
    assert not (work / "mined" / "conflicts.parquet").exists(), "mine finished before the kill"
    tars = sorted((work / "shards").glob("*.tar"))
    before = {t.name: t.stat().st_mtime_ns for t in tars}
    assert before

    log2 = tmp_path / "run2.log"
    proc = _run(work, log2, repo_root)
    try:
        rc = proc.wait(timeout=400)
    finally:
        _kill_group(proc)
    out = log2.read_text()
    assert rc == 0, out[-4000:]
    assert "shard: skipped" in out  # restored from its cache record, not run
    assert "shard: running" not in out
    assert "mine: running" in out and "mine: done" in out
    assert {t.name: t.stat().st_mtime_ns for t in sorted((work / "shards").glob("*.tar"))} == before
    assert (work / "mined" / "conflicts.parquet").is_file()
    assert "mined benchmark" in out and str(work / "mined") in out  # where the outputs are
