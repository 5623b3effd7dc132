"""Checks that run before Ray starts or a model is built: every bad input is a clear, early error.

- the model config is valid (``mosear.model.ModelConfig``);
- every shard folder exists and has committed shards (an empty list is an error, not a no-op);
- each shard's first sample carries the members training needs (``frames.npy``, ``wav``, ``json``);
- a mix manifest, when given, has the needed columns and names samples that the shards hold;
- ``output`` and ``storage_path`` (local or object storage) are writable: a probe file is written and
  removed;
- the run's identity (:func:`run_identity`): the model config, the config fields that change what a
  step computes, and the *content* digests of the shards (their ``tar_sha256``) and of the mix. The Ray
  Train run folder is ``{storage_path}/{name}-{run_id}``: the same command on the same data resumes
  from its last checkpoint; changed data or config starts a new run (the log names what changed),
  never continues or re-exports the old one.

Returns a :class:`TrainPlan` (resolved shard list, identity, the step a resume starts from)
that the workers receive, so they do not repeat the listing.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import tarfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mosear.config import ConfigError
from mosear.identity import digest_json, digest_paths, file_digest, shard_folder_digest
from mosear.train.config import NEEDED_MEMBERS, TrainConfig
from mosear.train.state import check_compatible, latest_checkpoint_state

log = logging.getLogger(__name__)

__all__ = ["TrainPlan", "preflight", "model_config", "check_shard_members", "check_writable"]


@dataclass
class TrainPlan:
    shards: list[str]
    model_hash: str
    run_hash: str
    resume_step: int = 0
    resume_path: str | None = None
    train_keys: list[str] | None = None  # the keys the stream can yield (recorded in every checkpoint)
    train_keys_source: str = ""
    train_sources: dict[str, str] | None = None  # key -> its clip file's SHA-256 (the shard index's source_sha256)
    features: str | None = None  # feature table (model.inputs=features)
    data_digest: str = ""
    run_name: str = ""  # the Ray Train run folder: {name}-{run_id}
    identity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainPlan":
        return cls(**d)


def model_config(cfg: TrainConfig):
    """``cfg.model`` as a validated ``mosear.model.ModelConfig`` (ConfigError naming bad fields)."""
    from mosear.config import load_config
    from mosear.model import ModelConfig

    try:
        return load_config(ModelConfig, overrides=dict(cfg.model))
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None


def model_hash(cfg: TrainConfig) -> str:
    mc = model_config(cfg)
    if hasattr(mc, "hash"):
        return mc.hash()
    import hashlib

    return hashlib.sha256(json.dumps(mc.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def _members_of_first_sample(fileobj) -> set[str]:
    """Member suffixes (after the key's first dot) of the first sample in a tar stream."""
    first_key, found = None, set()
    with tarfile.open(fileobj=fileobj, mode="r|*") as tf:
        for info in tf:
            if not info.isfile():
                continue
            base = posixpath.basename(info.name)
            key, _, ext = base.partition(".")
            prefix = posixpath.join(posixpath.dirname(info.name), key)
            if first_key is None:
                first_key = prefix
            if prefix != first_key:
                break
            found.add(ext)
    return found


def check_shard_members(shard: str, needed: tuple[str, ...] = NEEDED_MEMBERS) -> None:
    """Raise ConfigError unless the shard's first sample has every ``needed`` member."""
    try:
        if "://" in shard:
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(shard)
            with fs.open_input_stream(path) as fh:
                found = _members_of_first_sample(fh)
        else:
            with open(shard, "rb") as fh:
                found = _members_of_first_sample(fh)
    except (tarfile.TarError, OSError) as exc:
        raise ConfigError(f"shard {shard} cannot be read as a tar: {exc}") from None
    if not found:
        raise ConfigError(f"shard {shard} holds no sample")
    missing = [m for m in needed if m not in found]
    if missing:
        raise ConfigError(
            f"shard {shard} lacks member(s) {missing} that training needs (has {sorted(found)}); "
            "was it written by `mosear shard` with frames and audio?"
        )


def _list_committed(folder: str) -> list[str]:
    from mosear.shards.reader import list_shards

    if "://" in folder:
        raise ConfigError(f"shards: {folder} is a URI; shards are read by path (mount the bucket or "
                          "use a shared filesystem); checkpoints (storage_path) may use object storage")
    if not Path(folder).is_dir():
        raise ConfigError(f"shards: folder {folder} does not exist")
    return [str(p) for p in list_shards(folder)]


def check_writable(uri: str, what: str) -> None:
    """Create ``uri`` if needed and write + delete a probe file there; ConfigError when that fails."""
    probe = f".mosear-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        if "://" in uri:
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(uri)
            fs.create_dir(path, recursive=True)
            with fs.open_output_stream(posixpath.join(path, probe)) as fh:
                fh.write(b"ok")
            fs.delete_file(posixpath.join(path, probe))
        else:
            p = Path(uri)
            p.mkdir(parents=True, exist_ok=True)
            (p / probe).write_bytes(b"ok")
            (p / probe).unlink()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {uri} is not writable: {exc}") from None


def _index_keys(shards: list[str], labelled: bool = False) -> set[str]:
    """Keys of the ok samples the shards' Parquet indexes list (``labelled``: only those with a label)."""
    import pyarrow.parquet as pq

    keys: set[str] = set()
    for shard in shards:
        index = shard[: -len(".tar")] + ".index.parquet" if shard.endswith(".tar") else None
        if not index or not ("://" in index or Path(index).is_file()):
            continue
        names = pq.read_schema(index).names
        cols = [c for c in ("key", "status", "label") if c in names]
        for r in pq.read_table(index, columns=cols).to_pylist():
            if r.get("status", "ok") in ("ok", None) and (not labelled or r.get("label") is not None):
                keys.add(r["key"])
    return keys


def source_digests(shards: list[str], keys: list[str]) -> dict[str, str]:
    """``key -> source_sha256`` of ``keys`` from the shards' Parquet indexes (keys without one, e.g.
    spliced clips or shards written before the column existed, are left out)."""
    import pyarrow.parquet as pq

    wanted, out = set(keys), {}
    for shard in shards:
        index = shard[: -len(".tar")] + ".index.parquet" if shard.endswith(".tar") else None
        if not index or not ("://" in index or Path(index).is_file()) or "source_sha256" not in pq.read_schema(index).names:
            continue
        for r in pq.read_table(index, columns=["key", "source_sha256"]).to_pylist():
            if r["key"] in wanted and r["source_sha256"]:
                out[r["key"]] = r["source_sha256"]
    return out


def trained_keys(cfg: TrainConfig, shards: list[str]) -> tuple[list[str], str]:
    """The sample keys this run can train on and where they come from (see :mod:`mosear.train.keys`)."""
    from mosear.train.data import load_mix

    if cfg.mix:
        held = _index_keys(shards)
        mix = load_mix(cfg.mix)
        keys = [k for k, (w, _t) in mix.items() if w > 0 and (not held or k in held)]
        return sorted(keys), f"mix: {cfg.mix}"
    return sorted(_index_keys(shards, labelled=True)), "shards (labelled samples)"


def _check_features(cfg: TrainConfig, keys: list[str]) -> str | None:
    """The feature table's path when the model reads features; ConfigError when it is missing, has other
    dimensions than the model config, or lacks keys (their count named)."""
    from mosear.model.features import FEATURES_FILE, load_features

    mc = model_config(cfg)
    if mc.inputs != "features":
        return None
    path = cfg.features or (str(Path(cfg.mix).parent / FEATURES_FILE) if cfg.mix else None)
    if path is None:
        raise ConfigError("model.inputs=features needs a feature table: set features=... (or give a mined mix, "
                          "whose folder holds features.parquet)")
    try:
        table, dims = load_features(path)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"features: {exc}") from None
    want = {"visual": mc.visual_feature_dim, "audio": mc.audio_feature_dim}
    if dims != want:
        raise ConfigError(f"features: {path} has dimensions {dims}, the model config expects {want} "
                          "(set model.visual_feature_dim / model.audio_feature_dim)")
    missing = [k for k in keys if k not in table]
    if len(missing) == len(keys):
        raise ConfigError(f"features: none of the {len(keys)} training keys is in {path}")
    if missing:
        log.warning("features: %d of %d training keys have no row in %s and are skipped, e.g. %s",
                    len(missing), len(keys), path, missing[:3])
    return str(Path(path).resolve())


def _check_mix(cfg: TrainConfig, shards: list[str]) -> None:
    from mosear.train.data import load_mix

    assert cfg.mix is not None
    if "://" not in cfg.mix and not Path(cfg.mix).is_file():
        raise ConfigError(f"mix: {cfg.mix} does not exist")
    try:
        mix = load_mix(cfg.mix)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"mix: {exc}") from None
    if not mix:
        raise ConfigError(f"mix: {cfg.mix} has no rows")
    # The shard indexes list their keys: count mix keys that no shard holds (metadata only).
    import pyarrow.parquet as pq

    keys: set[str] = set()
    for shard in shards:
        index = shard[: -len(".tar")] + ".index.parquet" if shard.endswith(".tar") else None
        if index and ("://" in index or Path(index).is_file()):
            table = pq.read_table(index, columns=["key", "status"]) if "status" in pq.read_schema(index).names \
                else pq.read_table(index, columns=["key"])
            rows = table.to_pylist()
            keys.update(r["key"] for r in rows if r.get("status", "ok") in ("ok", None))
    if keys and not (set(mix) & keys):
        raise ConfigError(f"mix: none of the {len(mix)} keys in {cfg.mix} is in the shards {cfg.shards}")
    missing = len(set(mix) - keys) if keys else 0
    if missing:
        log.warning("mix: %d of %d keys in %s are in none of the shards and will not be trained on",
                    missing, len(mix), cfg.mix)


def _count_samples(shards: list[str]) -> tuple[int, int]:
    """``(samples, unlabelled)`` over the shards' Parquet indexes (metadata only; 0, 0 without them)."""
    import pyarrow.parquet as pq

    total = unlabelled = 0
    for shard in shards:
        index = Path(shard[: -len(".tar")] + ".index.parquet")
        if not index.is_file():
            continue
        cols = [c for c in ("status", "label") if c in pq.read_schema(index).names]
        for row in pq.read_table(index, columns=cols).to_pylist():
            if row.get("status", "ok") == "ok":
                total += 1
                unlabelled += row.get("label") is None
    return total, unlabelled


def shard_folders(cfg: TrainConfig) -> list[str]:
    """The shard folders training reads: exactly ``cfg.shards`` (a mined mix's natural and spliced clips
    are both in the shard folder it was mined from; nothing is looked up beside the mix)."""
    return list(cfg.shards)


def _check_model_folder(cfg: TrainConfig) -> None:
    """A transformers audio-visual checkpoint (``preset: hf-av``) is checked before Ray starts."""
    from mosear.model.hf_av import preflight_model

    try:
        preflight_model(model_config(cfg))
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"model: {exc}") from None


def preflight(cfg: TrainConfig, world_size: int | None = None) -> TrainPlan:
    """Validate everything about ``cfg`` that can be checked cheaply; see the module docstring."""
    mhash = model_hash(cfg)
    _check_model_folder(cfg)
    shards: list[str] = []
    for folder in shard_folders(cfg):
        found = _list_committed(folder)
        if not found:
            raise ConfigError(f"shards: no committed shards in {folder} (run `mosear shard` first)")
        shards.extend(found)
    for shard in shards:
        check_shard_members(shard)
    if cfg.mix:
        _check_mix(cfg, shards)
    else:
        total, unlabelled = _count_samples(shards)
        if total and unlabelled == total:
            raise ConfigError(f"shards: none of the {total} samples has a canonical label; give a mined mix "
                              "(mix=.../train_mix.parquet) whose targets say what to learn")
        if unlabelled:
            log.warning("%d of %d samples have no canonical label and are skipped (no mix given)", unlabelled, total)
        else:
            log.info("%d labelled samples in %d shard(s)", total, len(shards))
    check_writable(cfg.output, "output")
    check_writable(cfg.resolved_storage_path, "storage_path")
    keys, source = trained_keys(cfg, shards)
    features = _check_features(cfg, keys)
    if features is not None:
        source += f"; with features in {features}"
    identity = run_identity(cfg, mhash)
    run_id = digest_json({k: v for k, v in identity.items() if k != "config_fields"})[:12]
    plan = TrainPlan(shards=shards, model_hash=mhash, run_hash=cfg.run_hash(), train_keys=keys,
                     train_keys_source=source, train_sources=source_digests(shards, keys), features=features,
                     data_digest=identity["data_digest"],
                     run_name=f"{cfg.name}-{run_id}", identity=identity)
    latest = latest_checkpoint_state(cfg.resolved_storage_path, plan.run_name)
    if latest is not None:
        where, state = latest
        check_compatible(state, where, mhash, plan.run_hash, world_size or cfg.num_workers, plan.data_digest)
        plan.resume_step = state.step
        plan.resume_path = where
    else:
        _say_why_new(cfg, plan)
    return plan


def run_identity(cfg: TrainConfig, mhash: str | None = None) -> dict[str, Any]:
    """What a training run is: model hash, run-config fields (not the resumable ones) and data digests.

    Shard folders count by their shards' recorded ``tar_sha256`` (:func:`mosear.identity.shard_folder_digest`),
    the mix by its bytes. A change in any of them is a different run.
    """
    from mosear.config import output_fields

    data = {os.path.abspath(f): shard_folder_digest(f) for f in shard_folders(cfg) if "://" not in f}
    if cfg.mix and "://" not in cfg.mix:
        data[os.path.abspath(cfg.mix)] = file_digest(cfg.mix)
    features = getattr(cfg, "features", None)
    if features and "://" not in str(features):
        data[os.path.abspath(features)] = digest_paths([features])
    from mosear.identity import default_memo, model_paths

    memo = default_memo(cfg.output)  # base weights are read once, then only when a file's stat changes
    for m in model_paths(cfg.model):  # the base model by its bytes, not its path
        data[str(m)] = digest_paths([m], memo)
    from mosear.identity import code_fingerprint

    return {"model": mhash or model_hash(cfg), "config": cfg.run_hash(), "world_size": cfg.num_workers,
            "code": code_fingerprint("mosear.train.recipe")["digest"],
            "data_digest": digest_json(data), "inputs": data, "config_fields": output_fields(cfg, resume=True)}


def _say_why_new(cfg: TrainConfig, plan: TrainPlan) -> None:
    """Log what changed against the newest earlier run of the same name (a new run starts)."""
    from mosear.identity import changed
    from mosear.train.state import earlier_runs

    runs = earlier_runs(cfg.resolved_storage_path, cfg.name, exclude=plan.run_name)
    if not runs:
        return
    where, state = runs[-1]
    old = state.identity or {}
    what = changed({"inputs": old.get("inputs"), "config_fields": old.get("config_fields"), "version": None,
                    "code": old.get("code")},
                   {"inputs": plan.identity["inputs"], "config_fields": plan.identity["config_fields"], "version": None,
                    "code": plan.identity.get("code")})
    log.warning("train: a new run %s starts at step 0: %s differ from the run at %s (step %d), which is kept",
                plan.run_name, "; ".join(what) or "model config or worker count", where, state.step)
