"""What a training checkpoint holds, and how it is written, found and read back.

One checkpoint is a folder (Ray Train copies it into ``{storage_path}/{name}/checkpoint_*``)::

    adapter/            the model's adapter only, via MoSEARModel.save_adapter (safetensors,
                        save_pretrained layout, plus the model config it belongs to), and
                        train_keys.json: the keys trained on (mosear.train.keys)
    optim.pt            {"optimizer": AdamW state, "scheduler": LambdaLR state}; plain tensors and
                        numbers, read back with torch.load(weights_only=True)
    train_state.json    step, per-rank data positions, hashes of the model and run config, versions
    metrics.jsonl       the metric rows up to this step (so a resume rewrites the log without
                        duplicates or gaps even if the output folder was lost)

Nothing here unpickles arbitrary objects. This module does not import Ray.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mosear.atomic import atomic_open, atomic_write
from mosear.config import ConfigError

__all__ = [
    "TrainState", "CheckpointMismatchError", "write_checkpoint", "read_train_state",
    "load_optim_state", "latest_checkpoint_state", "check_compatible", "earlier_runs",
]

STATE_FILE = "train_state.json"
OPTIM_FILE = "optim.pt"
ADAPTER_DIR = "adapter"
METRICS_FILE = "metrics.jsonl"


class CheckpointMismatchError(ConfigError):
    """A checkpoint that belongs to another model or run config; resuming from it is refused."""


@dataclass
class TrainState:
    """The resumable scalar state of a run.

    ``positions[r]`` is rank ``r``'s data position (:class:`mosear.train.recipe.DataPosition`):
    ``{"streams": [[e, n], ...], "micro_batches": m}``: loader stream ``s`` has consumed ``n`` samples
    (after mix weighting) of epoch ``e``, and the rank ``m`` micro-batches in all.
    """

    step: int
    positions: list[dict[str, Any]]
    model_hash: str
    run_hash: str
    world_size: int
    samples_seen: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    data_digest: str = ""  # content digest of the shards and the mix trained on
    identity: dict[str, Any] = field(default_factory=dict)  # TrainPlan.identity: names what changed

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainState":
        data = json.loads(text)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def write_checkpoint(
    directory: str | Path,
    model: Any,
    optim_state: dict[str, Any],
    scheduler: Any,
    state: TrainState,
    metrics_rows: list[dict[str, Any]],
    train_keys: tuple[list[str], str] | None = None,
) -> Path:
    """Write one checkpoint folder (rank 0 only). ``model`` is the unwrapped MoSEARModel,
    ``optim_state`` the optimizer's full (unsharded) state dict, ``train_keys`` ``(keys, source)``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.save_adapter(d / ADAPTER_DIR)
    if train_keys is not None:
        from mosear.train.keys import write_train_keys

        write_train_keys(d / ADAPTER_DIR, *train_keys)
    with atomic_open(d / OPTIM_FILE, "wb") as fh:
        torch.save({"optimizer": optim_state, "scheduler": scheduler.state_dict()}, fh)
    atomic_write(d / METRICS_FILE, "".join(json.dumps(row, sort_keys=True) + "\n" for row in metrics_rows))
    # The state file last: a folder without it is not a checkpoint.
    atomic_write(d / STATE_FILE, state.to_json())
    return d


def read_train_state(directory: str | Path) -> TrainState:
    return TrainState.from_json((Path(directory) / STATE_FILE).read_text(encoding="utf-8"))


def read_metrics(directory: str | Path) -> list[dict[str, Any]]:
    p = Path(directory) / METRICS_FILE
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_optim_state(directory: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any,
                     fsdp_model: Any = None) -> None:
    """Restore optimizer and scheduler state (tensors and numbers only: weights_only=True).

    ``fsdp_model``: the FSDP-wrapped model, whose ranks each take their shard of the full state.
    """
    blob = torch.load(Path(directory) / OPTIM_FILE, map_location="cpu", weights_only=True)
    osd = blob["optimizer"]
    if fsdp_model is not None:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        osd = FSDP.optim_state_dict_to_load(fsdp_model, optimizer, osd)
    optimizer.load_state_dict(osd)
    scheduler.load_state_dict(blob["scheduler"])


def _fs_and_path(uri: str):
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def latest_checkpoint_state(storage_path: str, name: str) -> tuple[str, TrainState] | None:
    """The checkpoint with the highest step under ``{storage_path}/{name}``, or None.

    Works on local folders and object storage (pyarrow filesystems); reads only the small
    ``train_state.json`` files.
    """
    import pyarrow.fs as pafs

    fs, root = _fs_and_path(storage_path)
    run_dir = posixpath.join(root, name)
    try:
        infos = fs.get_file_info(pafs.FileSelector(run_dir, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return None
    # Ray Train's snapshot lists the checkpoints it registered (fully persisted); a folder a killed
    # run was still copying is not among them. Without a snapshot every complete-looking folder counts.
    registered: set[str] | None = None
    snapshot = posixpath.join(run_dir, "checkpoint_manager_snapshot.json")
    if fs.get_file_info(snapshot).type == pafs.FileType.File:
        try:
            with fs.open_input_stream(snapshot) as fh:
                snap = json.loads(fh.read().decode("utf-8"))
            registered = {r["checkpoint_dir_name"] for r in snap.get("checkpoint_results", [])}
        except (ValueError, KeyError, TypeError, OSError):
            registered = None
    best: tuple[str, TrainState] | None = None
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        if registered is not None and info.base_name not in registered:
            continue
        state_path = posixpath.join(info.path, STATE_FILE)
        if fs.get_file_info(state_path).type != pafs.FileType.File:
            continue  # an upload that never finished
        with fs.open_input_stream(state_path) as fh:
            state = TrainState.from_json(fh.read().decode("utf-8"))
        if best is None or state.step > best[1].step:
            best = (info.path, state)
    return best


def earlier_runs(storage_path: str, name: str, exclude: str = "") -> list[tuple[str, TrainState]]:
    """The newest checkpoint of every run folder ``{name}-*`` under ``storage_path``, oldest step first."""
    import pyarrow.fs as pafs

    fs, root = _fs_and_path(storage_path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []
    found = []
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name.startswith(f"{name}-") and info.base_name != exclude:
            best = latest_checkpoint_state(storage_path, info.base_name)
            if best is not None:
                found.append((info.mtime_ns or 0, best))
    return [b for _, b in sorted(found, key=lambda t: t[0])]


def check_compatible(state: TrainState, where: str, model_hash: str, run_hash: str, world_size: int,
                     data_digest: str | None = None) -> None:
    """Refuse to resume from a checkpoint of another model config, run config, data or world size."""
    if state.model_hash != model_hash:
        raise CheckpointMismatchError(
            f"checkpoint {where} was trained with another model config (model hash {state.model_hash}, "
            f"this config {model_hash}); resuming would load adapters of the wrong shape or meaning. "
            "Use a new run name (name=...) or another storage_path, or restore the model config."
        )
    if state.world_size != world_size:
        raise CheckpointMismatchError(
            f"checkpoint {where} was written by {state.world_size} workers, this run has {world_size}: "
            "each worker's data position would not carry over. Resume with num_workers="
            f"{state.world_size}, or start a new run name."
        )
    if state.run_hash != run_hash:
        raise CheckpointMismatchError(
            f"checkpoint {where} belongs to a run with other data/optimizer settings (run hash "
            f"{state.run_hash}, this config {run_hash}). Only max_steps, logging, checkpointing and "
            "cluster fields may change on resume; use a new run name for a new experiment."
        )
    if data_digest is not None and state.data_digest != data_digest:
        raise CheckpointMismatchError(
            f"checkpoint {where} was trained on other data (shards / mix content digest {state.data_digest or '?'}, "
            f"now {data_digest}); resuming would continue an old optimizer on new data. Use a new run name."
        )
