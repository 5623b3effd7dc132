"""Set-up for the orchestration tests.

Prefect keeps its database under PREFECT_HOME; these tests use their own (a temp dir for the session),
so they never share an SQLite file with a developer's Prefect or with tests running beside them.
Flows run in-process against Prefect's temporary (ephemeral) API server, as ``mosear run`` does;
``test_server.py`` starts a real ``prefect server`` and ``test_cluster.py`` a real Ray head node.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="mosear-prefect-home-")
os.environ["PREFECT_HOME"] = _HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mosear")
os.environ.setdefault("MOSEAR_RETRY_BACKOFF_S", "1")  # retries wait 1 s, 2 s instead of 10 s, 20 s
os.environ.pop("PREFECT_API_URL", None)

sys.path.insert(0, str(Path(__file__).parent))  # tests/flows/flowutil.py, ray_head.py

@pytest.fixture(scope="session")
def small_shard_overrides() -> dict:
    """Shard values that keep the sample corpus quick (4 small frames per clip)."""
    return {"num_frames": 4, "height": 64, "width": 64, "workers": 2}


@pytest.fixture(scope="session", autouse=True)
def _stop_temporary_prefect_server():
    """Stop Prefect's temporary API server while pytest still captures output (not at interpreter exit,
    where its last log line would hit a closed stream)."""
    yield
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()
    _stop_orphaned_servers()


def _stop_orphaned_servers() -> None:
    """A ``mosear run`` killed with SIGKILL (test_resume, test_faults) cannot stop the temporary Prefect
    server it started, which runs in a session of its own: each full suite left one ``uvicorn`` behind.
    Stop the orphans (parent gone) that use this session's PREFECT_HOME, and nothing else."""
    import signal

    proc = Path("/proc")
    if not proc.is_dir():
        return
    mark = f"PREFECT_HOME={_HOME}".encode()
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and mark in env and b"uvicorn" in cmd:
            try:
                os.kill(int(d.name), signal.SIGTERM)
            except ProcessLookupError:
                pass
