"""A throw-away local Ray cluster for tests (flows, train) (``ray start --head --block``) on its own ports and temp dir.

Not ``ray stop``: that kills every Ray process of the machine, including the embedded Ray of tests
running beside this one. The head runs as ``ray start --block`` in its own process group, which is
terminated at the end; its temp dir keeps ``ray_current_cluster`` out of /tmp/ray so that other
processes' ``ray.init()`` never attach to it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class JobsAddress(str):
    """The Jobs API address (a ``str``); ``.gcs`` is the head's GCS address (``ip:port``, for ``ray.init``)."""

    gcs: str = ""


@contextmanager
def local_ray_cluster(num_cpus: int = 2, timeout_s: float = 90.0, temp_dir: Path | None = None):
    """Yield the Jobs API address (``http://127.0.0.1:PORT``) of a fresh single-node cluster.

    ``temp_dir``: the head's ``--temp-dir`` (default: a fresh ``/tmp/rayf-*``); ``ray start`` writes its
    ``ray_current_cluster`` file there, which is what ``ray.init()`` without an address looks for (in
    ``$RAY_TMPDIR/ray``): a test that wants a "stranger's" cluster passes ``Path(RAY_TMPDIR) / "ray"``.
    """
    ports = free_ports(9)
    gcs, dash, agent_http, agent_grpc, client, node_mgr, obj_mgr, metrics, rtenv = ports
    # the workers' port range must not hold any of the ports above (ray start refuses to start)
    worker_lo = free_ports(1)[0]
    while any(worker_lo <= p <= worker_lo + 200 for p in ports) or worker_lo + 200 > 65000:
        worker_lo = free_ports(1)[0]
    own_dir = temp_dir is None
    if temp_dir is None:
        temp_dir = Path(tempfile.mkdtemp(prefix="rayf-", dir="/tmp"))  # short: socket paths are limited
    temp_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    cmd = [
        "ray", "start", "--head", "--block", "--disable-usage-stats", f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}", f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--ray-client-server-port={client}",
        f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rtenv}",
        f"--min-worker-port={worker_lo}", f"--max-worker-port={worker_lo + 200}",
    ]
    log = open(temp_dir / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = JobsAddress(f"http://127.0.0.1:{dash}")
    address.gcs = f"127.0.0.1:{gcs}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited {proc.returncode}: {(temp_dir / 'head.log').read_text()[-3000:]}")
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.time() > deadline:
                    raise RuntimeError(f"Ray Jobs API at {address} not up after {timeout_s} s") from None
                time.sleep(1.0)
        yield address
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _kill_leftovers(temp_dir)
        log.close()
        if own_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_leftovers(temp_dir: Path) -> None:
    """Ray daemons that left the process group: only those whose command line names our temp dir."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(temp_dir) in " ".join(p.info["cmdline"] or []):
                p.kill()
        except (psutil.Error, TypeError):
            pass
