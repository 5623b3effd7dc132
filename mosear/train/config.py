"""``TrainConfig``: every knob of ``mosear train``, typed and validated at the edge.

Build it with ``load_config(TrainConfig, yaml_path, overrides)``; bad values raise
:class:`mosear.config.ConfigError` naming the field. :func:`preflight` then checks the things a config
alone cannot (shards exist and carry the members training needs, the storage path is writable, an
existing checkpoint belongs to this model config) *before* Ray starts or a model is built.

Which fields may change between a run and its resume is declared on each field: fields marked
``SCHEDULING`` / ``LOCATION`` (how fast, where to log, where checkpoints go) and ``RESUMABLE``
(``max_steps``: a resume continues to it). Everything else, plus the *content* of the shards and the mix
(``INPUT``), is the run's identity (:meth:`TrainConfig.run_hash`, :mod:`mosear.identity`).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mosear.config import INPUT, LOCATION, RESUMABLE, SCHEDULING, StageConfig

__all__ = ["TrainConfig", "NEEDED_MEMBERS"]

# Tar members a training sample must have (docs/contracts.md: frames.npy, wav, json).
NEEDED_MEMBERS: tuple[str, ...] = ("frames.npy", "wav", "json")



class TrainConfig(StageConfig):
    """Configuration of one training run (``mosear train --config train.yaml key=value ...``)."""

    # -- data -------------------------------------------------------------------------------------
    shards: list[str] = Field(
        json_schema_extra=INPUT, default_factory=lambda: ["shards"],
        description="shard folders (local or shared-filesystem paths); committed shards of all are used",
    )
    mix: str | None = Field(
        None, json_schema_extra=INPUT,
        description="mined train_mix.parquet (key, shard, subset, weight, target): conflict-balanced "
        "sampling; samples not in the mix are skipped, each kept sample is repeated ~weight times",
    )
    target_template: str = Field(
        "{label}", description="target text without a mix (or with target=template), filled from the sample's "
        "metadata ({label}, ...)")
    target: Literal["mix", "template"] = Field(
        "mix", description="with a mix: the mix's target (label + reasoning caption), or target_template "
        "filled from the sample's metadata (template; the default {label} trains on the label alone)")
    features: str | None = Field(
        None, json_schema_extra=INPUT, description="feature table (mosear.model.features format) for model.inputs=features; default: "
        "features.parquet beside the mix (what mosear mine writes)")
    shuffle_buffer: int = Field(64, ge=0, description="samples held per worker for shuffling (0: off)")
    dataloader_workers: int = Field(0, ge=0, description="torch DataLoader processes per train worker")

    # -- model ------------------------------------------------------------------------------------
    model: dict[str, Any] = Field(
        default_factory=lambda: {"preset": "tiny"},
        description="mosear.model.ModelConfig fields (preset, adapter=mose|lora, ...)",
    )

    # -- optimisation -----------------------------------------------------------------------------
    batch_size: int = Field(2, ge=1, description="samples per worker per micro-batch")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_steps: int = Field(20, json_schema_extra=RESUMABLE, ge=1, description="optimizer steps in total (a resume continues to it)")
    lr: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(2, ge=0, description="linear warm-up from 0 to lr, in optimizer steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays lr to lr*min_lr_ratio")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (None: off)")
    seed: int = Field(0, description="seeds init, shuffling, dropout (per step) and mix sampling")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast matmuls to bfloat16")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="fsdp: shard the frozen backbone (GPU)")

    # -- Ray / cluster ----------------------------------------------------------------------------
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one process per GPU / CPU slot)")
    use_gpu: bool = Field(False, json_schema_extra=SCHEDULING, description="one GPU per worker, NCCL backend (gloo otherwise)")
    cpus_per_worker: float = Field(1.0, json_schema_extra=SCHEDULING, gt=0)
    ray_address: str | None = Field(None, json_schema_extra=SCHEDULING, description="None: embedded Ray (or RAY_ADDRESS); else a cluster")
    torch_threads: int | None = Field(None, json_schema_extra=SCHEDULING, ge=1, description="torch intra-op threads per worker")

    # -- outputs, checkpoints, recovery -----------------------------------------------------------
    output: str = Field("runs/train", json_schema_extra=LOCATION, description="local folder: adapter/, metrics.jsonl, tensorboard/")
    storage_path: str | None = Field(
        None, json_schema_extra=LOCATION,
        description="Ray Train storage for checkpoints: a local folder or s3://, gs://, abfs:// URI "
        "(default: {output}/ray). Shared storage on a multi-node cluster.",
    )
    name: str = Field("mosear-train", json_schema_extra=LOCATION, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="run name under storage_path: the run folder is {name}-{run_id}, run_id a "
                      "digest of config and data, so rerunning the same command on the same data resumes")
    checkpoint_every: int = Field(10, json_schema_extra=SCHEDULING, ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(2, json_schema_extra=SCHEDULING, ge=1, description="most recent checkpoints kept")
    max_failures: int = Field(2, json_schema_extra=SCHEDULING, ge=-1, description="worker-group restarts from the last checkpoint")
    log_every: int = Field(1, json_schema_extra=SCHEDULING, ge=1, description="optimizer steps between rows of metrics.jsonl / TensorBoard")
    report_every: int = Field(
        10, json_schema_extra=SCHEDULING, ge=1, description="optimizer steps between ray.train.report calls (besides checkpoints); each "
        "report waits for Ray Train's controller, which polls every ~2 s, so not every step")
    tensorboard: bool = Field(False, json_schema_extra=SCHEDULING, description="also write TensorBoard event files")
    progress: bool = Field(True, json_schema_extra=SCHEDULING, description="tqdm progress bar on rank 0")

    @field_validator("shards")
    @classmethod
    def _shards_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("no shard folder given (shards=[...] is empty)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.strategy == "fsdp" and not self.use_gpu:
            raise ValueError("strategy=fsdp needs use_gpu=true (FSDP shards over CUDA devices)")
        mose = self.model.get("mose") or {}
        if (self.strategy == "fsdp" and self.model.get("adapter", "mose") == "mose"
                and mose.get("dynamic_weights", True) and mose.get("weight_rule", "update") != "update"):
            raise ValueError(f"model.mose.weight_rule={mose['weight_rule']!r} needs strategy=ddp: the reliance "
                             "measurement runs the unwrapped model, which FSDP shards")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")
        return self

    # -- derived ----------------------------------------------------------------------------------
    @property
    def resolved_storage_path(self) -> str:
        """Where Ray Train keeps checkpoints: ``storage_path`` or ``{output}/ray`` (absolute)."""
        if self.storage_path:
            return self.storage_path if "://" in self.storage_path else os.path.abspath(self.storage_path)
        return os.path.abspath(os.path.join(self.output, "ray"))

    @property
    def backend(self) -> str:
        """The torch.distributed backend: NCCL on GPU, gloo on CPU."""
        return "nccl" if self.use_gpu else "gloo"

    def samples_per_step(self) -> int:
        """Samples consumed by one optimizer step over all workers."""
        return self.batch_size * self.grad_accum_steps * self.num_workers

    def run_hash(self) -> str:
        """Hash of the config fields that change what a step computes (a resume must match it).

        The data's share of the identity is the content digest of the shards and the mix
        (:func:`mosear.train.preflight.data_digest`), recorded beside it in every checkpoint."""
        return self.output_hash(resume=True)
