"""The four stages as data: how to build each one's config, run it, and find its inputs and output.

A :class:`StageSpec` names the stage's Python entrypoint (``mosear.shards:run_shard``), its CLI
subcommand (the Ray job entrypoint in cluster mode), which config fields are its inputs (digested by
content: :func:`mosear.identity.stage_identity`) and its output folder. Every stage marks its output
complete with ``{output}/commit.json`` (:func:`mosear.identity.write_marker`), written last; which
config fields change the output is declared on the fields themselves (:mod:`mosear.config`).
The orchestration layer holds no stage logic: everything it knows about a stage is on this page.

Entrypoints and config classes are ``module:attribute`` strings imported on first use, so this page
loads without the stages' heavy dependencies.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mosear.config import StageConfig

__all__ = ["StageSpec", "STAGES", "get_stage", "stage_available"]


def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _local(p: str | os.PathLike | None) -> Path | None:
    """A local path, or None for object-storage URIs (their contents are not hashed here)."""
    if p is None or "://" in str(p):
        return None
    return Path(p)


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``run`` (``module:function``), its ``config`` class, CLI ``command``, inputs and output.

    ``inputs(cfg)`` lists the paths whose contents determine the output (their digests are the
    input half of the stage's identity); ``output(cfg)`` is the output folder, complete when its
    ``commit.json`` says so.
    """

    name: str
    run: str
    config: str
    command: str
    inputs: Callable[[Any], list[Path]]
    # config fields holding local paths: "a[].b" is field b of each item of list a; a trailing "!"
    # fills a missing value with the current folder (cluster jobs run elsewhere, see ray_jobs.py)
    path_fields: tuple[str, ...] = ()
    artifacts: dict[str, str] = field(default_factory=dict)  # label -> path relative to output

    def output(self, cfg: Any) -> Path:
        """The stage's output folder: every stage config names it ``output``."""
        return Path(cfg.output)

    def run_fn(self) -> Callable[[Any], Any]:
        return _import(self.run)

    def config_cls(self) -> type[StageConfig]:
        return _import(self.config)

    def is_complete(self, output: Path, identity: dict[str, Any] | None = None) -> bool:
        """True when ``output``'s commit marker says complete (and, given ``identity``, is of it)."""
        from mosear.identity import marker_matches, read_marker

        if identity is not None:
            return marker_matches(output, identity)
        m = read_marker(output)
        return bool(m) and m.get("status") == "complete"


# -- per-stage knowledge: which config fields are inputs and outputs --------------------------------


def _shard_inputs(cfg: Any) -> list[Path]:
    """The corpus file and every source's root folder and manifest (as the config resolved them)."""
    paths = [p for p in [_local(getattr(cfg, "corpus", None))] if p is not None]
    for src in getattr(cfg, "sources", []):
        paths.append(src.root_path())
        if getattr(src, "manifest", None) is not None:
            paths.append(src.manifest_path())
    return paths


def _paths_of(cfg: Any, *names: str) -> list[Path]:
    out: list[Path] = []
    for name in names:
        value = getattr(cfg, name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        out.extend(p for v in values if (p := _local(v)) is not None)
    return out


def _eval_inputs(cfg: Any) -> list[Path]:
    # entries may be "name=path" (mosear.evaluate.units.checkpoint_names)
    paths = [p for c in getattr(cfg, "checkpoints", []) if c != "base" and (p := _local(c.split("=", 1)[-1]))]
    for b in getattr(cfg, "benchmarks", []):
        paths += [p for p in (_local(b.path), _local(b.shards), _local(b.features)) if p is not None]
    return paths


def _train_inputs(cfg: Any) -> list[Path]:
    """The shard folders (with the spliced shards a mined mix draws on) and the mix file."""
    from mosear.train.preflight import shard_folders

    return [p for f in shard_folders(cfg) if (p := _local(f)) is not None] + _paths_of(cfg, "mix", "features")


STAGES: dict[str, StageSpec] = {
    "shard": StageSpec(
        name="shard",
        run="mosear.shards:run_shard",
        config="mosear.shards.config:ShardConfig",
        command="shard",
        inputs=_shard_inputs,
        # inline sources resolve root/manifest against base_dir; "!" pins a missing one to the cwd
        path_fields=("corpus", "output", "sources[].base_dir!"),
        artifacts={"run summary": "run.json", "quarantine": "quarantine.parquet"},
    ),
    "mine": StageSpec(
        name="mine",
        run="mosear.mine:run_mine",
        config="mosear.mine.config:MineConfig",
        command="mine",
        inputs=lambda cfg: _paths_of(cfg, "shards", "py_modules") + (
            _paths_of(cfg.splice, "faces", "voices") if cfg.splice.enabled else []
        ),
        path_fields=("shards", "output", "splice.faces", "splice.voices"),
        artifacts={"conflicts": "conflicts.parquet", "training mix": "train_mix.parquet"},
    ),
    "train": StageSpec(
        name="train",
        run="mosear.train:run_train",
        config="mosear.train.config:TrainConfig",
        command="train",
        inputs=_train_inputs,
        path_fields=("shards", "mix", "features", "output", "storage_path"),
        artifacts={"adapter": "adapter", "metrics": "metrics.jsonl"},
    ),
    "eval": StageSpec(
        name="eval",
        run="mosear.evaluate:run_eval",
        config="mosear.evaluate.config:EvalConfig",
        command="eval",
        inputs=_eval_inputs,
        path_fields=("checkpoints", "output", "benchmarks[].path", "benchmarks[].shards", "benchmarks[].features"),
        artifacts={"HTML report": "report.html", "metrics": "metrics.parquet"},
    ),
}


def get_stage(name: str) -> StageSpec:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {list(STAGES)}") from None


def stage_available(name: str) -> bool:
    """True when the stage's package is installed (stages land independently)."""
    try:
        get_stage(name).run_fn()
    except (ImportError, AttributeError):
        return False
    return True
