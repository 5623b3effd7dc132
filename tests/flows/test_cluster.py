"""Cluster mode: stages submitted to a real local Ray head node through the Ray Jobs API.

One head node (``ray start --head`` on its own ports and temp dir, see ``cluster.py``) serves the
module. Checked: the job's log lines reach the Prefect logs; a job stopped from outside (a transient
fault) is retried and the flow completes; bad input fails at once with the stage's own message; a
flow process terminated the way a Prefect runner cancels it (SIGTERM) stops its Ray job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from ray_head import local_ray_cluster
from flowutil import REPO, flow_run_logs, load_flow, task_runs_of

pytestmark = [pytest.mark.slow, pytest.mark.server]

SMALL = {"num_frames": 4, "height": 64, "width": 64}


@pytest.fixture(scope="module")
def ray_head():
    with local_ray_cluster(num_cpus=2) as address:
        yield address


def _jobs(address: str) -> list:
    from ray.job_submission import JobSubmissionClient

    return sorted(JobSubmissionClient(address).list_jobs(), key=lambda j: j.start_time or 0)


def _flush_logs() -> None:
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)


def test_cluster_stage_streams_logs_and_retries_a_stopped_job(ray_head, tmp_path, samples_dir):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    stopped: list[str] = []

    def stop_first_running_job() -> None:  # the fault: the job dies under the flow (e.g. node lost)
        deadline = time.time() + 120
        while time.time() < deadline and not stopped:
            for job in client.list_jobs():
                if str(job.status) == "RUNNING" and job.submission_id.startswith("mosear-shard-"):
                    client.stop_job(job.submission_id)
                    stopped.append(job.submission_id)
                    return
            time.sleep(0.2)

    saboteur = threading.Thread(target=stop_first_running_job, daemon=True)
    saboteur.start()
    shard = load_flow("stages", "shard")
    out = tmp_path / "shards"
    state = shard(
        config={"corpus": str(samples_dir / "corpus.yaml"), "output": str(out)}, overrides=SMALL,
        mode="cluster", ray_address=ray_head, return_state=True,
    )
    saboteur.join(timeout=5)
    assert state.is_completed(), state
    assert stopped, "the fault was never injected"
    assert sorted(out.glob("*.tar")) and (out / "run.json").is_file()

    flow_run_id = state.state_details.flow_run_id
    mine = [j for j in _jobs(ray_head) if (j.metadata or {}).get("prefect_flow_run_id") == str(flow_run_id)]
    assert [str(j.status) for j in mine] == ["STOPPED", "SUCCEEDED"], [(j.submission_id, j.status) for j in mine]
    [run] = [r for r in task_runs_of(flow_run_id) if r.name == "shard"]
    assert run.run_count == 2  # one retry, after the transient failure

    _flush_logs()
    logs = flow_run_logs(flow_run_id)
    ok_job = mine[-1].submission_id
    assert f"[ray {ok_job}]" in logs  # the job's own output, line by line, in the Prefect logs
    assert "inputs" in logs.split(f"[ray {ok_job}]", 1)[1]  # e.g. the shard stage's "21 inputs, ..." line
    assert "was stopped before it finished" in logs


def test_cluster_bad_input_fails_with_stage_message(ray_head, tmp_path):
    corpus = tmp_path / "corpus.yaml"
    corpus.write_text("sources:\n  - adapter: ravdess\n    root: no_such_folder\n")
    shard = load_flow("stages", "shard")
    state = shard(config={"corpus": str(corpus), "output": str(tmp_path / "shards")}, mode="cluster", ray_address=ray_head, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="is not a folder") as info:
        state.result()
    assert "BadInputError" in type(info.value).__name__
    [run] = [r for r in task_runs_of(state.state_details.flow_run_id) if r.name == "shard"]
    assert run.run_count == 1  # not retried
    # the class came from the job's own verdict file, not from its log (issue 22 item 5)
    [verdict] = (tmp_path / ".mosear-cache" / "jobs").glob("mosear-shard-*.json")
    rec = __import__("json").loads(verdict.read_text())
    assert rec["class"] == "bad_input" and rec["code"] == 2 and "is not a folder" in rec["message"], rec


def test_terminated_flow_stops_its_ray_job(ray_head, tmp_path, samples_dir):
    """A runner cancels a flow run by sending its process SIGTERM: the Ray job must not outlive it."""
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from flowutil import load_flow\n"
        "load_flow('stages', 'shard')(config={'corpus': %r, 'output': %r}, mode='cluster', ray_address=%r)\n"
    ) % (str(REPO / "tests" / "flows"), str(samples_dir / "corpus.yaml"), str(tmp_path / "shards"), ray_head)
    env = dict(os.environ)
    log = tmp_path / "flow.log"
    before = {j.submission_id for j in _jobs(ray_head)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    job = None
    try:
        deadline = time.time() + 180
        while time.time() < deadline and job is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            job = next((j for j in _jobs(ray_head) if j.submission_id not in before and str(j.status) == "RUNNING"), None)
            time.sleep(0.3)
        assert job is not None, "no job started:\n" + log.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    deadline = time.time() + 30
    while str(client.get_job_status(job.submission_id)) not in ("STOPPED", "SUCCEEDED", "FAILED") and time.time() < deadline:
        time.sleep(0.5)
    assert str(client.get_job_status(job.submission_id)) == "STOPPED", log.read_text()[-3000:]
    assert f"stopped Ray job {job.submission_id}" in log.read_text()
