"""Deployments from ``flows/prefect.yaml`` against a real ``prefect server start``.

The server listens on its own port on 127.0.0.1 with its own PREFECT_HOME (a temp dir) and is stopped
at the end. The test deploys every deployment of the file, checks the schedules and parameters the
server recorded, starts a process worker, triggers the ``shard`` deployment with
``prefect deployment run`` and checks the run completes and its shards exist.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from ray_head import free_ports

pytestmark = [pytest.mark.slow, pytest.mark.server]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture()
def prefect_server(tmp_path):
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_healthy(url, proc, log)
        yield url, env
    finally:
        _stop(proc)


def _cli(args: list[str], env: dict, cwd: Path, timeout: float = 300) -> str:
    res = subprocess.run(["prefect", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_deploy_and_run_from_prefect_yaml(prefect_server, tmp_path, repo_root):
    url, env = prefect_server
    _cli(["work-pool", "create", "mosear-local", "--type", "process"], env, repo_root)
    _cli(["deploy", "--prefect-file", "flows/prefect.yaml", "--all", "--no-prompt"], env, repo_root)

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        deps = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
    assert {"mosear-pipeline/nightly-shard-mine", "mosear-pipeline/weekly-train-eval", "mosear-shard/shard",
            "mosear-mine/mine", "mosear-train/train", "mosear-eval/eval"} <= set(deps)
    nightly = deps["mosear-pipeline/nightly-shard-mine"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.parameters["stages"] == ["shard", "mine"]
    assert [s.schedule.cron for s in deps["mosear-pipeline/weekly-train-eval"].schedules] == ["0 4 * * 0"]
    assert deps["mosear-shard/shard"].work_pool_name == "mosear-local"

    worker_log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        ["prefect", "worker", "start", "--pool", "mosear-local", "--limit", "1"],
        env=env, cwd=repo_root, stdout=open(worker_log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        out_dir = tmp_path / "shards"
        params = {"overrides": {"output": str(out_dir), "num_frames": 4, "height": 64, "width": 64}}  # on top of `config`
        out = _cli(
            ["deployment", "run", "mosear-shard/shard", "--params", json.dumps(params), "--watch",
             "--watch-timeout", "300"],
            env, repo_root, timeout=330,
        )
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        assert run.state.is_completed(), f"{run.state}\n{worker_log.read_text()[-4000:]}"
        assert sorted(out_dir.glob("*.tar")) and (out_dir / "run.json").is_file()
    finally:
        _stop(worker)
