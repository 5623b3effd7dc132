"""The Ray Train recipe on the tiny preset (CPU, gloo, 2 workers): a run killed and resumed, and a
run whose worker dies under FailureConfig, end with the same loss curve and the same adapter weights
as an uninterrupted run; a checkpoint of another model config is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mosear.config import ConfigError, load_config
from mosear.train import TrainConfig, run_train
from mosear.train.preflight import preflight
from mosear.train.state import latest_checkpoint_state

pytestmark = pytest.mark.slow

STEPS = 6


def _cfg(shards: Path, out: Path, **kw) -> TrainConfig:
    base = {
        "shards": [str(shards)], "output": str(out), "name": "run", "model": {"preset": "tiny", "adapter": "mose"},
        "num_workers": 2, "batch_size": 2, "grad_accum_steps": 2, "max_steps": STEPS, "warmup_steps": 2,
        "lr": 1e-3, "checkpoint_every": 2, "shuffle_buffer": 4, "torch_threads": 1, "progress": False,
        "max_failures": 0,
    }
    base.update(kw)
    return load_config(TrainConfig, overrides=base)


def _run_dir(out: Path) -> Path:
    """The Ray Train run folder, ``{name}-{run_id}`` (one per identity of config and data)."""
    [d] = sorted((out / "ray").glob("run-*"))
    return d


def _checkpoint_done(out: Path, step: int):
    return lambda: any((out / "ray").glob(f"run-*/checkpoint_{step:08d}/train_state.json"))


def _curve(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    w = load_file(str(out / "adapter" / "adapter" / "adapter_model.safetensors"))
    w.update({f"proj.{k}": v for k, v in load_file(str(out / "adapter" / "projectors.safetensors")).items()})
    return w


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = _curve(a), _curve(b)
    assert [s for s, _ in ca] == list(range(1, STEPS + 1)) == [s for s, _ in cb]  # no gaps, no duplicates
    assert [l for _, l in cb] == pytest.approx([l for _, l in ca], rel=1e-5, abs=1e-6)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 0
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


@pytest.fixture(scope="module")
def reference_run(ray_local, train_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    res = run_train(_cfg(train_shards, out, tensorboard=True))
    assert res.steps == STEPS and res.resumed_from_step == 0
    return out


def test_uninterrupted_run_writes_adapter_metrics_and_checkpoints(reference_run):
    rows = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == STEPS
    for key in ("loss", "lr", "samples_per_s", "tokens_per_s", "data_share", "modality_weight/audio"):
        assert key in rows[-1], key
    assert any(k.startswith("gate/audio/") for k in rows[-1])
    assert rows[0]["lr"] < rows[1]["lr"]  # warm-up
    assert rows[-1]["lr"] < rows[2]["lr"]  # cosine decay
    assert rows[-1]["samples_seen"] == STEPS * 2 * 2 * 2  # steps x batch x accumulation x workers
    assert list((reference_run / "tensorboard").glob("events.out.tfevents.*"))
    ckpts = sorted(_run_dir(reference_run).glob("checkpoint_0*"))
    assert [c.name for c in ckpts] == ["checkpoint_00000004", "checkpoint_00000006"]  # keep_checkpoints=2
    state = json.loads((ckpts[-1] / "train_state.json").read_text())
    assert state["step"] == STEPS and len(state["positions"]) == 2
    # The same lookup through a URI (pyarrow filesystem), as for object storage.
    where, st = latest_checkpoint_state(f"file://{reference_run / 'ray'}", _run_dir(reference_run).name)
    assert where.endswith("checkpoint_00000006") and st.step == STEPS


def test_checkpoint_records_the_keys_it_trained_on(reference_run, train_shards):
    """adapter/train_keys.json: every labelled sample of the shards (no mix), with a digest that matches."""
    import pyarrow.parquet as pq

    from mosear.train.keys import keys_digest, read_train_keys

    tk = read_train_keys(reference_run / "adapter")
    assert tk is not None, "the exported adapter has no train_keys.json"
    rows = [r for f in sorted(train_shards.glob("*.index.parquet")) for r in pq.read_table(f).to_pylist()]
    expected = {r["key"] for r in rows if r["status"] == "ok" and r["label"] is not None}
    assert tk.keys == expected and tk.digest == keys_digest(expected)
    # and each clip's bytes (the shard index's source_sha256): the eval protocol's identity across datasets
    assert tk.sources == {r["key"]: r["source_sha256"] for r in rows if r["key"] in expected}
    ckpt = sorted(_run_dir(reference_run).glob("checkpoint_0*"))[-1]
    assert read_train_keys(ckpt / "adapter").digest == tk.digest  # in every checkpoint, not only the export


def test_killed_job_rerun_resumes_to_the_same_result(ray_local, train_shards, reference_run, tmp_path, caplog):
    from faults import kill_once_when

    out = tmp_path / "killed"
    cfg = _cfg(train_shards, out)
    # A worker is SIGKILLed from outside once the step-2 checkpoint exists; with max_failures=0 the job fails.
    with kill_once_when("RayTrainWorker", when=_checkpoint_done(out, 2)) as killed:
        with pytest.raises(Exception):
            run_train(cfg)
    assert killed, "no training worker was found to kill"
    assert not (out / "commit.json").exists()  # no marker: the stage is not done
    # The same command again resumes from the last checkpoint and ends where an uninterrupted run ends.
    res = run_train(cfg)
    assert 0 < res.resumed_from_step < STEPS and res.steps == STEPS
    _assert_same_run(reference_run, out)
    assert json.loads((out / "commit.json").read_text())["status"] == "complete"

    # Another model config (or data) is another run: a new run folder from step 0, the old one kept, and
    # the log names what changed. It never resumes (or re-exports) the old run.
    other = _cfg(train_shards, out, model={"preset": "tiny", "adapter": "mose", "lora": {"r": 8}}, lr=5e-4)
    with caplog.at_level("WARNING", logger="mosear.train.preflight"):
        plan = preflight(other)
    assert plan.resume_step == 0 and plan.run_name != _run_dir(out).name
    assert "config fields lr, model" in caplog.text and "a new run" in caplog.text
    # Rerunning the finished command trains nothing and exports the same adapter.
    again = run_train(cfg)
    assert again.resumed_from_step == STEPS
    _assert_same_run(reference_run, out)


def test_worker_failure_restarts_from_checkpoint(ray_local, train_shards, reference_run, tmp_path):
    from faults import kill_once_when

    out = tmp_path / "restart"
    with kill_once_when("RayTrainWorker", when=_checkpoint_done(out, 4)) as killed:
        res = run_train(_cfg(train_shards, out, max_failures=1))
    assert killed, "the fault never fired"
    assert res.steps == STEPS
    _assert_same_run(reference_run, out)


def test_embedded_trainer_has_no_placement_group_cleaner(tmp_path):
    """Ray Train's PlacementGroupCleaner asks the dashboard's state API, which an embedded Ray does not
    run: its thread died with a traceback in every `mosear run`. The embedded trainer leaves it out."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from mosear.train.recipe import _EmbeddedTorchTrainer

    kw = dict(scaling_config=ScalingConfig(num_workers=1), run_config=RunConfig(storage_path=str(tmp_path)))
    stock = TorchTrainer(lambda: None, **kw)._create_default_callbacks()
    assert any(isinstance(c, PlacementGroupCleanerCallback) for c in stock)
    ours = _EmbeddedTorchTrainer(lambda: None, **kw)._create_default_callbacks()
    assert not any(isinstance(c, PlacementGroupCleanerCallback) for c in ours)
    assert len(ours) == len(stock) - 1


def test_mosear_train_with_the_ogm_rule_moves_the_modality_weights(ray_local, train_shards, tmp_path, capsys):
    """Issue 11: the train step measures reliance (weight_rule=ogm, every reliance_every steps) and sets
    the weights; before, only benchmarks/bias_lab.py drove them and `mosear train` left them at 1."""
    from mosear.cli import main

    out = tmp_path / "ogm"
    assert main(["train", f"shards=[{train_shards}]", f"output={out}", "name=ogm", "model.preset=tiny",
                 "model.adapter=mose", "model.mose.weight_rule=ogm", "model.mose.reliance_every=1",
                 "num_workers=1", "batch_size=2", "max_steps=2", "warmup_steps=0", "checkpoint_every=2",
                 "torch_threads=1", "progress=false", "max_failures=0"]) == 0
    weights = {k: v for k, v in _weights(out).items() if "mose_modality_weight" in k}
    assert weights and all(float(v[0]) == 1.0 and float(v[1:].min()) < 1.0 for v in weights.values())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert min(rows[-1]["modality_weight/visual"], rows[-1]["modality_weight/audio"]) < 1.0
