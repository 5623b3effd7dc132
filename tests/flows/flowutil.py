"""Helpers shared by the orchestration tests (imported by module name; conftest.py is not importable
by name when several test folders have one)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_flow(name: str, attr: str):
    """A flow object from ``flows/{name}.py`` (as Prefect loads a deployment entrypoint)."""
    spec = importlib.util.spec_from_file_location(f"mosear_test_flows_{name}", REPO / "flows" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attr)


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
