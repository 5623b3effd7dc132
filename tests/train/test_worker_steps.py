"""The train worker's named steps, each alone (no Ray Train run): build and restore, streams and their
data position, the train step's explicit MoSE weight calls, a metric row, a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mosear.config import load_config
from mosear.train import TrainConfig
from mosear.train.preflight import preflight
from mosear.train.recipe import (
    DataPosition, MetricWindow, Streams, build_and_restore, save_checkpoint,
)
from mosear.train.state import read_train_state
from mosear.train.step import StepStats, build_optimizer, train_step

CPU = torch.device("cpu")


def _cfg(shards: Path, out: Path, **model) -> TrainConfig:
    return load_config(TrainConfig, overrides={
        "shards": [str(shards)], "output": str(out), "batch_size": 2, "shuffle_buffer": 4, "progress": False,
        "model": {"preset": "tiny", "adapter": "mose", "lora": {"r": 4, "dropout": 0.0}, **model}})


def _weights(model) -> torch.Tensor:
    return model.mose.modality_weights().clone()


def test_streams_resume_at_their_data_position(train_shards, tmp_path):
    cfg = _cfg(train_shards, tmp_path)
    plan = preflight(cfg)
    model = build_and_restore(cfg, plan, 1, None).model
    s = Streams(cfg, plan, 0, 1, model.collate, None)
    first = [next(s) for _ in range(3)]
    again = Streams(cfg, plan, 0, 1, model.collate, None)
    next(again), next(again)
    pos = DataPosition.from_dict(again.position().to_dict())  # what train_state.json keeps per rank
    assert pos.micro_batches == 2 and pos.to_dict() == {"streams": again.positions, "micro_batches": 2}
    resumed = Streams(cfg, plan, 0, 1, model.collate, pos)
    assert torch.equal(next(resumed)["input_ids"], first[2]["input_ids"])


@pytest.mark.parametrize("rule", ["update", "ogm", "attention"])
def test_train_step_is_where_the_modality_weights_change(train_shards, tmp_path, rule):
    """update: measurements applied after each backward (none left queued); ogm / attention: measured
    on the step's first micro-batch every reliance_every steps, set on every layer (and only then)."""
    cfg = _cfg(train_shards, tmp_path, mose={"weight_rule": rule, "reliance_every": 2})
    plan = preflight(cfg)
    model = build_and_restore(cfg, plan, 1, None).model
    opt, sched = build_optimizer(model, 1e-2, 0.0, 0, 4, 0.1)
    streams = Streams(cfg, plan, 0, 1, model.collate, None)
    every = model.reliance_every
    assert every == (None if rule == "update" else 2)
    seen = []
    for step in range(3):
        train_step(model, streams, opt, sched, grad_accum_steps=2, device=CPU, seed=0, step=step,
                   reliance_every=every)
        assert model.mose.shared.pending == {}  # nothing waits for a later call
        seen.append(_weights(model))
    ones = torch.ones(3)
    if rule == "update":  # B starts at 0 (no contribution), so the weights move from the second step on
        assert not torch.equal(seen[-1], ones)
    else:
        assert not torch.equal(seen[0], ones)  # step 0 measured
        assert torch.equal(seen[1], seen[0])  # step 1 not (k = 2)
        assert float(seen[0][0]) == 1.0 and float(seen[0][1:].min()) < 1.0  # the dominant modality slowed
        layers = model.mose.mose_layers()
        assert all(torch.equal(x.mose_modality_weight["default"], seen[-1]) for x in layers)


def test_metric_window_makes_a_row_and_starts_over():
    w = MetricWindow(samples_seen=10)
    w.add(4, 100, 0.25)
    stats = StepStats(loss=1.5, lr=1e-3, samples=4, tokens=100, data_s=0.25, compute_s=0.5, grad_norm=0.7,
                      aux={"lm_loss": 1.4})
    row = w.row(3, 1.5, stats, 0, {"modality_weight/audio": 0.9})
    assert row["step"] == 3 and row["samples_seen"] == 14 and row["grad_norm"] == 0.7
    assert row["lm_loss"] == 1.4 and row["modality_weight/audio"] == 0.9
    assert row["samples_per_s"] > 0 and 0 < row["data_share"]
    assert w.samples == w.tokens == 0 and w.samples_seen == 14


def test_a_checkpoint_written_alone_restores_the_run(train_shards, tmp_path):
    cfg = _cfg(train_shards, tmp_path, mose={"weight_rule": "ogm", "reliance_every": 1})
    plan = preflight(cfg)
    model = build_and_restore(cfg, plan, 1, None).model
    opt, sched = build_optimizer(model, 1e-2, 0.0, 0, 4, 0.1)
    streams = Streams(cfg, plan, 0, 1, model.collate, None)
    train_step(model, streams, opt, sched, grad_accum_steps=1, device=CPU, seed=0, step=0, reliance_every=1)
    folder = save_checkpoint(model, model, opt, sched, cfg, plan, step=1, rank=0, world=1,
                             position=streams.position(), samples_seen=2, rows=[{"step": 1, "loss": 1.0}])
    assert read_train_state(folder).positions == [streams.position().to_dict()]
    back = build_and_restore(cfg, plan, 1, folder)
    assert back.step == 1 and back.rows == [{"step": 1, "loss": 1.0}]
    torch.testing.assert_close(_weights(back.model), _weights(model), rtol=0, atol=0)  # saved with the adapter
    assert not torch.equal(_weights(back.model), torch.ones(3))


def test_ge_noise_changes_the_step_and_is_reproducible(train_shards, tmp_path):
    """mose.ge_noise: the train step adds OGM-GE's noise before clipping (the update differs from the
    noise-free one), drawn from a (seed, step) generator (two runs give the same parameters)."""
    def one_step(ge: bool) -> list[torch.Tensor]:
        cfg = _cfg(train_shards, tmp_path / str(ge), mose={"weight_rule": "ogm", "reliance_every": 1, "ge_noise": ge})
        plan = preflight(cfg)
        torch.manual_seed(0)
        model = build_and_restore(cfg, plan, 1, None).model
        opt, sched = build_optimizer(model, 1e-2, 0.0, 0, 4, 0.1)
        streams = Streams(cfg, plan, 0, 1, model.collate, None)
        for step in range(2):
            train_step(model, streams, opt, sched, grad_accum_steps=1, device=CPU, seed=0, step=step,
                       reliance_every=1)
        assert float(_weights(model)[1:].min()) < 1.0  # a modality was slowed, so the noise applied
        return [p.detach().clone() for p in model.parameters() if p.requires_grad]

    plain, noisy, again = one_step(False), one_step(True), one_step(True)
    assert any(not torch.equal(a, b) for a, b in zip(plain, noisy))
    assert all(torch.equal(a, b) for a, b in zip(noisy, again))


def test_metrics_logger_rewrites_whole_files_durably(tmp_path, monkeypatch):
    """Catches: ``MetricsLogger`` appending with a plain ``open`` (a crash mid-line leaves a torn row that
    ``read_metrics_file`` cannot parse, nothing fsynced), or not truncating to the resumed rows."""
    import os

    from mosear.train.metrics import MetricsLogger, read_metrics_file

    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n')
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd))[1])
    log = MetricsLogger(tmp_path, rows=[{"step": 1}])  # resumed at step 1: rows 2 and 3 are dropped
    log.log({"step": 2, "loss": 0.5})
    assert read_metrics_file(tmp_path / "metrics.jsonl") == [{"step": 1}, {"step": 2, "loss": 0.5}]
    assert (tmp_path / "metrics.jsonl").stat().st_ino in synced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
