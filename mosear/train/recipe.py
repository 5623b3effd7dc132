"""Distributed fine-tuning of MoSE experts (or the plain LoRA baseline) with Ray Train.

One recipe, reading top to bottom: :func:`run_train` checks the inputs (:mod:`.preflight`), starts or
joins Ray, and runs a ``TorchTrainer`` whose workers each execute :func:`train_loop_per_worker`.

Features
- Data-parallel training: DDP (gloo on CPU, NCCL on GPU) or FSDP (GPU, ``strategy=fsdp``), bf16
  autocast (``precision=bf16``); one process per worker, ``num_workers`` of them.
- Streaming input: every worker reads only its share of the shards (:mod:`.data`), collated into
  multimodal batches by the model's prompt builder (``MoSEARModel.collate``); optional
  conflict-balanced sampling from the mined ``train_mix.parquet`` (``mix=``).
- AdamW, gradient accumulation, linear warm-up + cosine decay, gradient clipping; seeds for init,
  shuffling, mix sampling and (per step) dropout.
- Metrics (:mod:`.metrics`): loss, lr, gate load per modality, modality weights, samples/s,
  tokens/s, data-wait share; reported through ``ray.train.report``, ``{output}/metrics.jsonl`` and
  TensorBoard when enabled.
- Recovery: a checkpoint every ``checkpoint_every`` steps and at the end; ``FailureConfig`` restarts
  the worker group from the last one after a worker failure; rerunning the same command (same
  ``name``, ``storage_path``, config and data) after the whole job died resumes from the last one.
  The Ray Train run folder is ``{name}-{run_id}``, ``run_id`` a digest of the run's identity (model,
  run config, content of shards and mix: :func:`mosear.train.preflight.run_identity`), so changed data
  or config starts a new run instead of resuming or re-exporting an old one.

What a checkpoint holds (:mod:`.state`): the adapter only (``save_adapter``: safetensors + model
config, and ``train_keys.json``, the keys trained on, :mod:`.keys`), optimizer and scheduler state, the step, every worker's data position, the hashes of the
model and run config (a checkpoint of another config is refused), and the metric rows so far.

After training the final adapter replaces ``{output}/adapter`` in one folder swap
(:func:`mosear.atomic.swap_dir`), the metric log goes to ``{output}/metrics.jsonl``, and
``{output}/commit.json`` (the stage's marker: identity, step, checkpoint, adapter digest) is written
last. The train stage is done when that marker says so, never because some ``*.safetensors`` exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mosear.train.config import TrainConfig
from mosear.train.data import StreamSpec, TrainSampleStream, load_mix, make_loader
from mosear.train.metrics import MetricsLogger
from mosear.train.preflight import TrainPlan, model_config, preflight
from mosear.train.state import (
    ADAPTER_DIR, METRICS_FILE, TrainState, check_compatible, load_optim_state, read_metrics,
    read_train_state, write_checkpoint,
)
from mosear.train.step import build_optimizer, train_step

log = logging.getLogger(__name__)

__all__ = ["run_train", "TrainResult", "train_loop_per_worker"]


@dataclass
class TrainResult:
    """What a finished run left behind."""

    output: Path
    adapter: Path
    metrics: Path
    checkpoint: str
    steps: int
    final_loss: float | None
    resumed_from_step: int


# --------------------------------------------------------------------------------------- worker --
def _versions() -> dict[str, str]:
    import ray
    import transformers

    return {"torch": torch.__version__, "ray": ray.__version__, "transformers": transformers.__version__}


def train_loop_per_worker(loop_cfg: dict[str, Any]) -> None:
    """Body of every Ray Train worker: build, maybe restore, stream, step, report, checkpoint."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from mosear.model import build_model

    cfg = TrainConfig.model_validate(loop_cfg["train"])
    plan = TrainPlan.from_dict(loop_cfg["plan"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = ray.train.torch.get_device()

    # 1. Model: same seed on every rank, so adapters start identical (DDP also broadcasts rank 0's).
    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg))
    collate = model.collate

    # 2. Restore from the last checkpoint (a FailureConfig restart or a rerun of the same command).
    state: TrainState | None = None
    rows: list[dict[str, Any]] = []
    ckpt = ray.train.get_checkpoint()
    ckpt_dir = None
    if ckpt is not None:
        ckpt_dir = ckpt.to_directory(tempfile.mkdtemp(prefix="mosear-resume-"))
        state = read_train_state(ckpt_dir)
        check_compatible(state, ckpt.path, plan.model_hash, plan.run_hash, world, plan.data_digest)
        model.load_adapter(Path(ckpt_dir) / ADAPTER_DIR, trainable=True)
        rows = read_metrics(ckpt_dir)

    # 3. Distribute; optimizer over the adapter's parameters only.
    strategy_kwargs: dict[str, Any] = {}
    if cfg.strategy == "ddp" and world > 1:
        # With top-k gating, experts a batch does not route to get no gradient and DDP must not wait
        # for them; otherwise every adapter weight is used and the extra graph traversal is skipped.
        top_k = (cfg.model.get("mose") or {}).get("top_k")
        strategy_kwargs = {"find_unused_parameters": cfg.model.get("adapter", "mose") == "mose" and top_k is not None}
    elif cfg.strategy == "fsdp":
        strategy_kwargs = {"use_orig_params": True}  # frozen and trainable weights share flat params
    model = ray.train.torch.prepare_model(model, parallel_strategy=cfg.strategy,
                                          parallel_strategy_kwargs=strategy_kwargs)
    inner = model.module if hasattr(model, "module") else model
    opt, sched = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    if ckpt_dir is not None:
        load_optim_state(ckpt_dir, opt, sched, fsdp_model=model if cfg.strategy == "fsdp" else None)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    step = state.step if state else 0
    micro_done = step * cfg.grad_accum_steps

    # 4. Data: this rank's streams, resumed at their positions.
    streams = max(1, cfg.dataloader_workers)
    my_pos = state.positions[rank] if state else None
    start = tuple(tuple(my_pos["streams"][s]) for s in range(streams)) if my_pos else None
    spec = StreamSpec(shards=tuple(plan.shards), rank=rank, world_size=world, loader_streams=streams,
                      seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer, target_template=cfg.target_template,
                      target=cfg.target, start=start, rotation=micro_done % streams)
    mix = load_mix(cfg.mix) if cfg.mix else None
    features = None
    if plan.features:
        from mosear.model.features import load_features

        features = load_features(plan.features)[0]
    loader = make_loader(TrainSampleStream(spec, mix, features), cfg.batch_size, collate, cfg.dataloader_workers)
    batches = iter(loader)
    positions = [list(p) for p in (start or [(0, 0)] * streams)]

    def micro_batches():
        while True:
            batch, pos = next(batches)
            s, epoch, offset = pos[-1]
            positions[s] = [epoch, offset]
            yield batch

    metrics = MetricsLogger(cfg.output, rows, cfg.tensorboard) if rank == 0 else None
    bar = None
    if rank == 0 and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step")
    samples_seen = state.samples_seen if state else 0
    window = {"samples": 0, "tokens": 0, "data_s": 0.0, "t0": time.perf_counter()}
    gen = micro_batches()

    # 5. The loop: one optimizer step per iteration; report every log_every, checkpoint every
    #    checkpoint_every and at the last step.
    while step < cfg.max_steps:
        stats = train_step(model, gen, opt, sched, grad_accum_steps=cfg.grad_accum_steps, device=device,
                           max_grad_norm=cfg.max_grad_norm, precision=cfg.precision, seed=cfg.seed, step=step)
        step += 1
        # Sum over ranks: loss (for the mean), samples, tokens.
        red = torch.tensor([stats.loss, stats.samples, stats.tokens], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(red)
        loss, n_samples, n_tokens = red[0].item() / world, int(red[1].item()), int(red[2].item())
        samples_seen += n_samples
        window["samples"] += n_samples
        window["tokens"] += n_tokens
        window["data_s"] += stats.data_s
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        do_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.max_steps
        do_report = do_ckpt or step % cfg.report_every == 0
        do_log = step % cfg.log_every == 0 or do_report
        if not do_log:
            continue
        elapsed = max(1e-9, time.perf_counter() - window["t0"])
        row = {"step": step, "loss": loss, "lr": stats.lr, "samples_seen": samples_seen,
               "samples_per_s": window["samples"] / elapsed, "tokens_per_s": window["tokens"] / elapsed,
               "data_share": window["data_s"] / elapsed, "epoch": positions[0][0],
               **({"grad_norm": stats.grad_norm} if stats.grad_norm is not None else {}), **stats.aux}
        window = {"samples": 0, "tokens": 0, "data_s": 0.0, "t0": time.perf_counter()}
        if metrics is not None:
            metrics.log(row)
        checkpoint = None
        if do_ckpt:
            gathered: list[Any] = [None] * world
            mine = {"streams": positions, "micro_batches": step * cfg.grad_accum_steps}
            if world > 1:
                dist.all_gather_object(gathered, mine)
            else:
                gathered = [mine]
            if cfg.strategy == "fsdp":
                # Collectives on every rank: the full optimizer state, and full adapter weights on rank 0.
                from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

                osd = FSDP.optim_state_dict(model, opt)
                full = FSDP.summon_full_params(model, writeback=False, rank0_only=True, offload_to_cpu=True)
            else:
                osd = opt.state_dict() if rank == 0 else None
                full = contextlib.nullcontext()
            with full:
                if rank == 0:
                    tmp = tempfile.mkdtemp(prefix="mosear-ckpt-")
                    st = TrainState(step=step, positions=gathered, model_hash=plan.model_hash,
                                    run_hash=plan.run_hash, world_size=world, samples_seen=samples_seen,
                                    versions=_versions(), data_digest=plan.data_digest,
                                    identity=plan.identity or {})
                    write_checkpoint(tmp, inner, osd, sched, st, metrics.rows if metrics else [],
                                     train_keys=(plan.train_keys, plan.train_keys_source)
                                     if plan.train_keys is not None else None)
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
        if do_report:  # a collective: every rank reaches it at the same steps
            ray.train.report(row, checkpoint=checkpoint,
                             checkpoint_dir_name=f"checkpoint_{step:08d}" if do_ckpt else None,
                             delete_local_checkpoint_after_upload=checkpoint is not None)
    if bar is not None:
        bar.close()
    if metrics is not None:
        metrics.close()


# --------------------------------------------------------------------------------------- driver --
def run_train(cfg: TrainConfig) -> TrainResult:
    """Check inputs, run the TorchTrainer to ``cfg.max_steps`` (resuming if a checkpoint exists)."""
    from mosear.identity import stage_identity
    from mosear.train.spec import SPEC

    plan = preflight(cfg)  # raises ConfigError / CheckpointMismatchError before anything expensive
    identity = stage_identity(SPEC, cfg)  # the inputs as they are now, recorded in the marker at the end
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from mosear.ray_utils import init_ray

    if plan.resume_step >= cfg.max_steps:
        # Rerunning a finished command on the same data and config (the run folder is its identity):
        # nothing to train, export its last checkpoint again.
        log.info("checkpoint %s is already at step %d >= max_steps %d: nothing to train",
                 plan.resume_path, plan.resume_step, cfg.max_steps)
        return _export(ray.train.Checkpoint(plan.resume_path), cfg, plan, identity)
    embedded = not (cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    init_ray(cfg.ray_address)
    trainer = (_EmbeddedTorchTrainer if embedded else TorchTrainer)(
        train_loop_per_worker,
        train_loop_config={"train": cfg.model_dump(mode="json"), "plan": plan.to_dict()},
        torch_config=TorchConfig(backend=cfg.backend),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(
            name=plan.run_name,
            storage_path=cfg.resolved_storage_path,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            # Workers inherit the driver's view of the offline / auth settings.
            worker_runtime_env={"env_vars": {k: os.environ[k] for k in (
                "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "RAY_AUTH_MODE", "TOKENIZERS_PARALLELISM",
            ) if k in os.environ}},
        ),
    )
    log.info("training %s: %d worker(s), %s, storage %s/%s%s", cfg.model.get("adapter", "mose"),
             cfg.num_workers, cfg.backend, cfg.resolved_storage_path, plan.run_name,
             f", resuming from step {plan.resume_step}" if plan.resume_step else "")
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training under {cfg.resolved_storage_path}/{plan.run_name} ended without a checkpoint")
    return _export(result.checkpoint, cfg, plan, identity)


def _embedded_trainer_cls():
    from ray.train.torch import TorchTrainer

    class EmbeddedTorchTrainer(TorchTrainer):
        """TorchTrainer without Ray Train's PlacementGroupCleaner, for a Ray started in this process.

        The cleaner removes the run's placement groups if the controller dies without the cluster; it
        asks the dashboard's state API, which an embedded Ray does not start (``include_dashboard=False``),
        so its monitor thread dies with a traceback on every run. An embedded cluster dies with this
        process, placement groups included, so there is nothing for it to clean.
        """

        def _create_default_callbacks(self):  # a private hook of ray.train.v2 (2.5x); kept if absent
            from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

            return [c for c in super()._create_default_callbacks() if not isinstance(c, PlacementGroupCleanerCallback)]

    return EmbeddedTorchTrainer


def _EmbeddedTorchTrainer(*args, **kwargs):  # noqa: N802 - a class factory, called like the class
    try:
        cls = _embedded_trainer_cls()
    except ImportError:  # another Ray Train layout: the stock trainer
        from ray.train.torch import TorchTrainer as cls
    return cls(*args, **kwargs)


def _export(checkpoint, cfg: TrainConfig, plan: TrainPlan, identity: dict[str, Any]) -> TrainResult:
    """Copy the final adapter and metric log out of a (possibly remote) checkpoint into ``output``,
    then write the stage's commit marker (last)."""
    from mosear.atomic import atomic_open, remove_stale_temps, swap_dir, temp_name
    from mosear.identity import digest_paths, write_marker

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "commit.json").unlink(missing_ok=True)
    remove_stale_temps(out)
    adapter = out / ADAPTER_DIR
    with checkpoint.as_directory() as d:
        final = read_train_state(d)
        staged = temp_name(adapter)
        shutil.copytree(Path(d) / ADAPTER_DIR, staged)
        swap_dir(staged, adapter)  # a reader sees the old adapter or the new one, never a mix
        with open(Path(d) / METRICS_FILE, "rb") as src, atomic_open(out / METRICS_FILE, "wb") as dst:
            shutil.copyfileobj(src, dst)
        rows = read_metrics(d)
    write_marker(out, identity, "complete", step=final.step, checkpoint=str(checkpoint.path),
                 run=plan.run_name, adapter_digest=digest_paths([adapter]))
    return TrainResult(output=out, adapter=adapter, metrics=out / METRICS_FILE, checkpoint=checkpoint.path,
                       steps=final.step, final_loss=rows[-1]["loss"] if rows else None,
                       resumed_from_step=plan.resume_step)
