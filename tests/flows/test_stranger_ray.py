"""An embedded command never joins a Ray cluster that ``ray start`` left on the machine (issue 22 item 6,
issue 24 item 2).

After docs/cluster.md's "Try it locally" (``ray start --head``), Ray's ``ray.init()`` without an address
reads the ``ray_current_cluster`` file that ``ray start`` writes into Ray's temp folder: every embedded
command silently ran on that head, and once it was stopped ``mosear shard`` hung forever printing
"Failed to connect to GCS at address ...". Here the stranger's head writes that file where the embedded
command looks for it (``$RAY_TMPDIR/ray``, a folder of this test only, so no other process on the machine
sees it); the embedded command must finish on its own Ray, while the head lives and after it died.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_head import local_ray_cluster

from mosear.orchestrate.registry import stage_available

pytestmark = [pytest.mark.slow, pytest.mark.server,
              pytest.mark.skipif(not stage_available("shard"), reason="needs the shard stage")]


def _embedded_shard(ray_tmpdir: Path, samples_dir: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmpdir), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "mosear.cli", "shard", f"corpus={samples_dir / 'corpus.yaml'}", f"output={out}",
         "num_frames=2", "height=32", "width=32", "workers=1"],
        env=env, capture_output=True, text=True, timeout=300,
    )


def test_embedded_command_runs_on_its_own_ray_beside_a_live_and_a_stale_ray_start(samples_dir, tmp_path):
    """Catches: ``init_ray()`` calling ``ray.init()`` without ``address="local"`` (the command joins the
    live head: a driver appears in its job table; with the head gone it hangs until the timeout)."""
    from ray.job_submission import JobSubmissionClient

    root = Path(tempfile.mkdtemp(prefix="fh-", dir="/tmp"))  # short: Ray's socket paths are limited
    address_file = root / "ray" / "ray_current_cluster"
    with local_ray_cluster(num_cpus=1, temp_dir=root / "ray") as address:
        deadline = time.time() + 30  # ray start writes it once its head is up
        while not address_file.is_file() and time.time() < deadline:
            time.sleep(0.5)
        if not address_file.is_file():  # what `ray start` writes there (a slow start writes it later)
            address_file.write_text(address.gcs)
        # the trap is set: a plain ray.init() in this environment joins the stranger's head
        env = dict(os.environ, RAY_TMPDIR=str(root))
        env.pop("RAY_ADDRESS", None)
        probe = subprocess.run([sys.executable, "-c", "import ray; ray.init(); print(ray.get_runtime_context().gcs_address)"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert probe.stdout.strip().splitlines()[-1].endswith(address.gcs.split(":")[1]), probe.stdout + probe.stderr
        before = {j.job_id for j in JobSubmissionClient(address).list_jobs()}
        live = _embedded_shard(root, samples_dir, tmp_path / "live")
        assert live.returncode == 0, live.stderr[-3000:]
        joined = [j for j in JobSubmissionClient(address).list_jobs() if j.job_id not in before]
        assert joined == [], f"the embedded command ran on the stranger's head: {joined}"
        stale = address_file.read_text()
    # the head is gone; the file it left stays behind, as after a `ray start` whose head died
    if not address_file.is_file():
        address_file.write_text(stale)
    dead = _embedded_shard(root, samples_dir, tmp_path / "stale")
    assert dead.returncode == 0, dead.stderr[-3000:]
    assert "Failed to connect to GCS" not in dead.stderr
    assert (tmp_path / "stale" / "commit.json").is_file()
    shutil.rmtree(root, ignore_errors=True)
