"""Resume: a run killed with SIGKILL and restarted equals an uninterrupted run; a changed config never
resumes into an old output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from shard_helpers import shard_cfg

SMALL_CLI = ["num_frames=4", "height=32", "width=48", "progress=false", "samples_per_shard=2"]


def _snapshot(out):
    """What must be identical between runs: per shard, its keys, index rows and tar digest."""
    snap = {}
    for stats_p in sorted(out.glob("*.stats.json")):
        stats = json.loads(stats_p.read_text())
        name = stats["shard"]
        snap[name] = (stats["tar_sha256"], stats["keys_digest"], stats["num_samples"],
                      pq.read_table(out / f"{name}.index.parquet").to_pylist())
    return snap


@pytest.mark.slow
def test_sigkill_then_resume_equals_clean_run(samples_dir, repo_root, ray_local, tmp_path):
    from mosear.shards.run import run_shard

    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    ref = run_shard(shard_cfg(samples_dir, ref_out, samples_per_shard=2))
    assert ref.shards == 17

    cmd = [sys.executable, "-m", "mosear.cli", "shard", f"corpus={samples_dir / 'corpus.yaml'}",
           f"output={out}", "workers=1", *SMALL_CLI]
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    proc = subprocess.Popen(cmd, cwd=repo_root, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list(out.glob("*.stats.json"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait(timeout=30)
    committed = len(list(out.glob("*.stats.json")))
    assert 2 <= committed < 17, committed
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.tar")
            if (out / p.name.replace(".tar", ".stats.json")).exists()}
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "running"  # the killed run never finished

    result = run_shard(shard_cfg(samples_dir, out, samples_per_shard=2))
    assert result.shards_skipped >= committed and result.shards == 17
    assert result.written == ref.written == 33
    assert _snapshot(out) == _snapshot(ref_out)
    # only the missing shards were built: the committed ones are the very same files
    assert {n: ((out / n).stat().st_ino, (out / n).stat().st_mtime_ns) for n in kept} == kept
    assert not list(out.glob(".*tmp*")) and not list(out.glob("*.tmp*"))
    assert json.loads((out / "run.json").read_text())["status"] == "complete"

    # a third run has nothing left to do
    again = run_shard(shard_cfg(samples_dir, out, samples_per_shard=2))
    assert again.shards_skipped == result.shards and _snapshot(out) == _snapshot(ref_out)


def test_changed_config_refuses_old_output(sample_shards, samples_dir, capsys):
    from mosear.cli import main
    from mosear.shards.run import OutputConflictError, run_shard

    cfg, _ = sample_shards
    before = _snapshot(cfg.output)
    changed = shard_cfg(samples_dir, cfg.output, samples_per_shard=3, num_frames=5)
    with pytest.raises(OutputConflictError, match="Refusing to resume"):
        run_shard(changed)
    rc = main(["shard", f"corpus={samples_dir / 'corpus.yaml'}", f"output={cfg.output}", "samples_per_shard=3",
               "num_frames=5", "height=32", "width=48", "progress=false"])
    assert rc == 3 and "Refusing to resume" in capsys.readouterr().err
    assert _snapshot(cfg.output) == before  # nothing touched


def test_changed_config_in_a_shard_marker_refuses(sample_shards, samples_dir, tmp_path):
    """Even without run.json, a stats JSON of another config stops the run."""
    import shutil

    from mosear.shards.run import OutputConflictError, run_shard

    cfg, _ = sample_shards
    out = tmp_path / "mixed"
    out.mkdir()
    for suffix in (".tar", ".index.parquet", ".stats.json"):
        shutil.copy(cfg.output / f"train-000000{suffix}", out)
    with pytest.raises(OutputConflictError, match="written by config"):
        run_shard(shard_cfg(samples_dir, out, samples_per_shard=3, resize="pad"))


def test_bad_config_fails_before_work(samples_dir, tmp_path, capsys):
    from mosear.cli import main

    rc = main(["shard", f"corpus={samples_dir / 'corpus.yaml'}", f"output={tmp_path / 'o'}", "num_frames=0",
               "resize=stretch"])
    err = capsys.readouterr().err
    assert rc == 2 and "num_frames" in err and "resize" in err
    assert not (tmp_path / "o").exists()
    rc = main(["shard", f"output={tmp_path / 'o'}", "sources=[{adapter: nosuch, root: x}]"])
    assert rc == 2 and "unknown adapter" in capsys.readouterr().err
