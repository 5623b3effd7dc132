"""Flows in embedded mode against Prefect's temporary API server (as ``mosear run`` uses them)."""

from __future__ import annotations

import pytest
from flowutil import flow_run_logs, load_flow, task_runs_of


def _flush_logs() -> None:
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, overrides, expected",
    [
        # rejected when the config is validated
        ("bad-value", {"num_frames": 0}, "num_frames"),
        # passes validation, rejected by the stage when it reads the corpus
        ("missing-root", {}, "is not a folder"),
    ],
)
def test_bad_input_fails_flow_with_stage_message_and_no_retry(tmp_path, samples_dir, case, overrides, expected):
    shard = load_flow("stages", "shard")
    corpus = samples_dir / "corpus.yaml"
    if case == "missing-root":
        corpus = tmp_path / "corpus.yaml"
        corpus.write_text("sources:\n  - adapter: ravdess\n    root: no_such_folder\n")
    state = shard(config={"corpus": str(corpus), "output": str(tmp_path / "shards")}, overrides=overrides, return_state=True)
    assert state.is_failed(), state
    with pytest.raises(Exception, match=expected):
        state.result()
    _flush_logs()
    logs = flow_run_logs(state.state_details.flow_run_id)
    assert expected in logs, logs[-3000:]
    runs = task_runs_of(state.state_details.flow_run_id)
    stage_runs = [r for r in runs if r.name == "shard"]
    if case == "bad-value":  # validated once, in the flow, before any task: nothing ran
        assert stage_runs == []
        return
    assert len(stage_runs) == 1 and stage_runs[0].run_count == 1, "bad input must not be retried"
    assert stage_runs[0].state.is_failed()


@pytest.mark.slow
def test_shard_flow_caches_and_reruns_when_output_is_deleted(tmp_path, samples_dir, small_shard_overrides):
    """Same input + config: the second flow run restores the cached outcome; a deleted output reruns."""
    import shutil

    shard = load_flow("stages", "shard")
    kwargs = dict(config={"corpus": str(samples_dir / "corpus.yaml"), "output": str(tmp_path / "shards")}, overrides=small_shard_overrides)
    first = shard(**kwargs, return_state=True)
    assert first.is_completed(), first
    tars = sorted((tmp_path / "shards").glob("*.tar"))
    assert tars and (tmp_path / "shards" / "run.json").is_file()
    mtimes = [t.stat().st_mtime_ns for t in tars]

    second = shard(**kwargs, return_state=True)
    assert second.is_completed()
    [run] = [r for r in task_runs_of(second.state_details.flow_run_id) if r.name == "shard"]
    assert run.state.name == "Cached"
    assert [t.stat().st_mtime_ns for t in tars] == mtimes  # nothing rewritten
    assert second.result().cache_key == first.result().cache_key

    shutil.rmtree(tmp_path / "shards")
    third = shard(**kwargs, return_state=True)
    assert third.is_completed()
    assert (tmp_path / "shards" / "run.json").is_file()
    _flush_logs()
    assert "is incomplete now or holds another run's output; running it again" in flow_run_logs(third.state_details.flow_run_id)
