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
- MoSE's modality weights change only in the train step (:func:`mosear.train.step.train_step`): the
  update-size rule's measurements are applied after each backward, and the reliance rules
  (``model.mose.weight_rule=ogm|attention``) are measured every ``model.mose.reliance_every`` steps.

The worker runs a few named steps, each usable alone: :func:`build_and_restore` (model, checkpoint),
:class:`Streams` (this rank's micro-batches and their :class:`DataPosition`), ``train_step`` (one
optimizer step), :class:`MetricWindow` (a metric row) and :func:`save_checkpoint`.
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
from dataclasses import dataclass, field
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
from mosear.train.step import StepStats, build_optimizer, train_step

log = logging.getLogger(__name__)

__all__ = ["run_train", "TrainResult", "train_loop_per_worker", "build_and_restore", "Streams", "DataPosition",
           "MetricWindow", "save_checkpoint"]


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
# The worker's named steps, in the order train_loop_per_worker runs them; each works alone (tests build
# a model, open streams, write a checkpoint or a metric row without a Ray Train run).

def _versions() -> dict[str, str]:
    import ray
    import transformers

    return {"torch": torch.__version__, "ray": ray.__version__, "transformers": transformers.__version__}


@dataclass
class DataPosition:
    """Where one rank's data stands: ``streams[s] = [epoch, offset]`` of each DataLoader stream (offset:
    samples consumed after mix weighting) and the micro-batches consumed in all. Saved per rank in
    ``train_state.json`` as ``{"streams": [[e, n], ...], "micro_batches": m}``."""

    streams: list[list[int]]
    micro_batches: int

    def to_dict(self) -> dict[str, Any]:
        return {"streams": [list(p) for p in self.streams], "micro_batches": self.micro_batches}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataPosition":
        return cls([list(p) for p in data["streams"]], int(data["micro_batches"]))


@dataclass
class Restored:
    """What :func:`build_and_restore` hands the loop: the unwrapped model and, when resuming, the
    checkpoint's state, metric rows and folder (for the optimizer state, read after wrapping)."""

    model: Any
    state: TrainState | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_dir: Path | None = None

    @property
    def step(self) -> int:
        return self.state.step if self.state else 0


def build_and_restore(cfg: TrainConfig, plan: TrainPlan, world: int, checkpoint_dir: Path | None,
                      where: str | None = None) -> Restored:
    """Build the model (the same seed on every rank, so adapters start identical) and, with a checkpoint
    folder (a local copy of the checkpoint at ``where``), check it belongs to this run and load its
    adapter and metric rows. No Ray needed."""
    from mosear.model import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg))
    if checkpoint_dir is None:
        return Restored(model)
    state = read_train_state(checkpoint_dir)
    check_compatible(state, where or str(checkpoint_dir), plan.model_hash, plan.run_hash, world, plan.data_digest)
    model.load_adapter(Path(checkpoint_dir) / ADAPTER_DIR, trainable=True)
    return Restored(model, state, read_metrics(checkpoint_dir), Path(checkpoint_dir))


def _distribute(model: Any, cfg: TrainConfig, world: int) -> Any:
    """DDP (gloo / NCCL) or FSDP through Ray Train (a single worker gets the model back on its device)."""
    import ray.train.torch

    kwargs: dict[str, Any] = {}
    if cfg.strategy == "ddp" and world > 1:
        # With top-k gating, experts a batch does not route to get no gradient and DDP must not wait
        # for them; otherwise every adapter weight is used and the extra graph traversal is skipped.
        top_k = (cfg.model.get("mose") or {}).get("top_k")
        kwargs = {"find_unused_parameters": cfg.model.get("adapter", "mose") == "mose" and top_k is not None}
    elif cfg.strategy == "fsdp":
        kwargs = {"use_orig_params": True}  # frozen and trainable weights share flat params
    return ray.train.torch.prepare_model(model, parallel_strategy=cfg.strategy, parallel_strategy_kwargs=kwargs)


class Streams:
    """This rank's micro-batches (an iterator) and the position of each of its loader streams.

    Reads only this rank's share of the shards (:mod:`.data`), resumed at ``start`` (a
    :class:`DataPosition`, or None for a fresh run); collated by ``collate``.
    """

    def __init__(self, cfg: TrainConfig, plan: TrainPlan, rank: int, world: int, collate: Any,
                 start: DataPosition | None) -> None:
        n = max(1, cfg.dataloader_workers)
        begin = tuple(tuple(start.streams[s]) for s in range(n)) if start else None
        micro_done = start.micro_batches if start else 0
        spec = StreamSpec(shards=tuple(plan.shards), rank=rank, world_size=world, loader_streams=n,
                          seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer, target_template=cfg.target_template,
                          target=cfg.target, start=begin, rotation=micro_done % n)
        mix = load_mix(cfg.mix) if cfg.mix else None
        features = None
        if plan.features:
            from mosear.model.features import load_features

            features = load_features(plan.features)[0]
        loader = make_loader(TrainSampleStream(spec, mix, features), cfg.batch_size, collate, cfg.dataloader_workers)
        self._batches = iter(loader)
        self.positions = [list(p) for p in (begin or [(0, 0)] * n)]
        self.micro_batches = micro_done

    def __iter__(self) -> "Streams":
        return self

    def __next__(self) -> dict[str, Any]:
        batch, pos = next(self._batches)
        s, epoch, offset = pos[-1]
        self.positions[s] = [epoch, offset]
        self.micro_batches += 1
        return batch

    @property
    def epoch(self) -> int:
        return self.positions[0][0]

    def position(self) -> DataPosition:
        return DataPosition([list(p) for p in self.positions], self.micro_batches)


class MetricWindow:
    """Sums over the steps since the last metric row (all ranks' samples and tokens, rank 0's data
    wait), turned into a row (schema in :mod:`.metrics`) by :meth:`row`, which starts a new window."""

    def __init__(self, samples_seen: int = 0) -> None:
        self.samples_seen = samples_seen
        self._reset()

    def _reset(self) -> None:
        self.samples, self.tokens, self.data_s, self.t0 = 0, 0, 0.0, time.perf_counter()

    def add(self, samples: int, tokens: int, data_s: float) -> None:
        self.samples_seen += samples
        self.samples += samples
        self.tokens += tokens
        self.data_s += data_s

    def row(self, step: int, loss: float, stats: StepStats, epoch: int, extra: dict[str, float]) -> dict[str, Any]:
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        row = {"step": step, "loss": loss, "lr": stats.lr, "samples_seen": self.samples_seen,
               "samples_per_s": self.samples / elapsed, "tokens_per_s": self.tokens / elapsed,
               "data_share": self.data_s / elapsed, "epoch": epoch,
               **({"grad_norm": stats.grad_norm} if stats.grad_norm is not None else {}), **stats.aux, **extra}
        self._reset()
        return row


def _reduce(stats: StepStats, world: int) -> tuple[float, int, int]:
    """Over all ranks: the mean loss, the samples and the tokens of one step (one all-reduce)."""
    red = torch.tensor([stats.loss, stats.samples, stats.tokens], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(red)
    return red[0].item() / world, int(red[1].item()), int(red[2].item())


def save_checkpoint(model: Any, inner: Any, opt: Any, sched: Any, cfg: TrainConfig, plan: TrainPlan, *,
                    step: int, rank: int, world: int, position: DataPosition, samples_seen: int,
                    rows: list[dict[str, Any]]) -> Path | None:
    """Gather every rank's data position and write one checkpoint folder on rank 0 (a temporary folder,
    returned; None on other ranks). Every rank must call it at the same steps (collectives)."""
    gathered: list[Any] = [position.to_dict()]
    if world > 1:
        import torch.distributed as dist

        gathered = [None] * world
        dist.all_gather_object(gathered, position.to_dict())
    if cfg.strategy == "fsdp":
        # Collectives on every rank: the full optimizer state, and full adapter weights on rank 0.
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        osd = FSDP.optim_state_dict(model, opt)
        full = FSDP.summon_full_params(model, writeback=False, rank0_only=True, offload_to_cpu=True)
    else:
        osd = opt.state_dict() if rank == 0 else None
        full = contextlib.nullcontext()
    with full:
        if rank != 0:
            return None
        tmp = Path(tempfile.mkdtemp(prefix="mosear-ckpt-"))
        state = TrainState(step=step, positions=gathered, model_hash=plan.model_hash, run_hash=plan.run_hash,
                           world_size=world, samples_seen=samples_seen, versions=_versions(),
                           data_digest=plan.data_digest, identity=plan.identity or {})
        keys = ((plan.train_keys, plan.train_keys_source, plan.train_sources or {})
                if plan.train_keys is not None else None)
        write_checkpoint(tmp, inner, osd, sched, state, rows, train_keys=keys)
        return tmp


def train_loop_per_worker(loop_cfg: dict[str, Any]) -> None:
    """Body of every Ray Train worker: build and restore, streams, then per step: step, metrics, checkpoint."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(loop_cfg["train"])
    plan = TrainPlan.from_dict(loop_cfg["plan"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Ray Train's INFO records on this worker stay out of the driver's terminal; warnings and errors
    # still show. The "Reporting training result N: TrainingReport(...)" dump per report comes from a
    # logger Ray Train names after its file (logging.getLogger(__file__) in ray 2.60's
    # train/v2/_internal/execution/context.py), outside "ray.train", so LoggingConfig does not reach it:
    # that logger's level is set too.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as _train_context

        logging.getLogger(_train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray Train layout
        pass
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = ray.train.torch.get_device()

    # 1. Build and restore (a FailureConfig restart or a rerun of the same command resumes).
    ckpt = ray.train.get_checkpoint()
    ckpt_dir = Path(ckpt.to_directory(tempfile.mkdtemp(prefix="mosear-resume-"))) if ckpt is not None else None
    restored = build_and_restore(cfg, plan, world, ckpt_dir, where=ckpt.path if ckpt is not None else None)
    inner = restored.model
    model = _distribute(inner, cfg, world)
    opt, sched = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    if ckpt_dir is not None:
        load_optim_state(ckpt_dir, opt, sched, fsdp_model=model if cfg.strategy == "fsdp" else None)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    step = restored.step

    # 2. Streams: this rank's share of the data, at its saved position.
    start = DataPosition.from_dict(restored.state.positions[rank]) if restored.state else None
    streams = Streams(cfg, plan, rank, world, inner.collate, start)

    # 3. Steps; a metric row every log_every, a report every report_every, a checkpoint every
    #    checkpoint_every and at the last step.
    metrics = MetricsLogger(cfg.output, restored.rows, cfg.tensorboard) if rank == 0 else None
    window = MetricWindow(restored.state.samples_seen if restored.state else 0)
    bar = None
    if rank == 0 and cfg.progress:
        # Ray's distributed tqdm: the worker sends its state to the driver, which draws the one bar (a
        # plain tqdm here would be relayed as one "(RayTrainWorker pid=...)" line per refresh).
        from ray.experimental.tqdm_ray import tqdm

        bar = tqdm(total=cfg.max_steps, desc="train", unit="step")
        bar.update(step)
    reliance_every = getattr(inner, "reliance_every", None)
    while step < cfg.max_steps:
        stats = train_step(model, streams, opt, sched, grad_accum_steps=cfg.grad_accum_steps, device=device,
                           max_grad_norm=cfg.max_grad_norm, precision=cfg.precision, seed=cfg.seed, step=step,
                           reliance_every=reliance_every)
        step += 1
        loss, n_samples, n_tokens = _reduce(stats, world)
        window.add(n_samples, n_tokens, stats.data_s)
        if bar is not None:
            bar.set_description(f"train loss={loss:.4f}")
            bar.update(1)
        do_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.max_steps
        do_report = do_ckpt or step % cfg.report_every == 0
        if not (do_report or step % cfg.log_every == 0):
            continue
        row = window.row(step, loss, stats, streams.epoch, inner.adapter_statistics() if rank == 0 else {})
        if metrics is not None:
            metrics.log(row)
        folder = None
        if do_ckpt:
            folder = save_checkpoint(model, inner, opt, sched, cfg, plan, step=step, rank=rank, world=world,
                                     position=streams.position(), samples_seen=window.samples_seen,
                                     rows=metrics.rows if metrics else [])
        if do_report:  # a collective: every rank reaches it at the same steps
            ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(str(folder)) if folder else None,
                             checkpoint_dir_name=f"checkpoint_{step:08d}" if do_ckpt else None,
                             delete_local_checkpoint_after_upload=folder is not None)
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
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
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
            # Ray Train's own INFO lines (one "Reporting training result N: TrainingReport(...)" dump per
            # report, controller state changes) stay in its log files; warnings and errors still show.
            logging_config=LoggingConfig(log_level="WARNING"),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            # Workers inherit the driver's view of the offline / auth settings.
            # Ray Train's print patch (print -> its logger, which adds a newline) would turn every progress
            # update of the worker's bar into a blank relayed "(RayTrainWorker pid=...)" line: off.
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", **{k: os.environ[k] for k in (
                "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "RAY_AUTH_MODE", "TOKENIZERS_PARALLELISM",
            ) if k in os.environ}}},
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
