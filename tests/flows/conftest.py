"""Set-up for the orchestration tests.

Prefect keeps its database under PREFECT_HOME; these tests use their own (a temp dir for the session),
so they never share an SQLite file with a developer's Prefect or with tests running beside them.
Flows run in-process against Prefect's temporary (ephemeral) API server, as ``mosear run`` does;
``test_server.py`` starts a real ``prefect server`` and ``test_cluster.py`` a real Ray head node.
"""

from __future__ import annotations

import importlib.util
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

sys.path.insert(0, str(Path(__file__).parent))  # tests/flows/cluster.py

REPO = Path(__file__).resolve().parents[2]


def load_flow(name: str, attr: str):
    """A flow object from ``flows/{name}.py`` (as Prefect loads a deployment entrypoint)."""
    spec = importlib.util.spec_from_file_location(f"mosear_test_flows_{name}", REPO / "flows" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attr)


@pytest.fixture(scope="session")
def small_shard_overrides() -> dict:
    """Shard values that keep the sample corpus quick (8 small frames per clip)."""
    return {"num_frames": 4, "height": 64, "width": 64, "workers": 2}


def flow_run_logs(flow_run_id) -> str:
    """Every log line Prefect stored for a flow run (flow and task runs), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC,
        )
    return "\n".join(f"{log.name}: {log.message}" for log in logs)


def task_runs_of(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
