"""What a pipeline stage is, as data: :class:`StageSpec`.

Each stage package exports its own spec (``mosear/shards/spec.py``, ``mosear/mine/spec.py``,
``mosear/train/spec.py``, ``mosear/evaluate/spec.py``); :mod:`mosear.orchestrate.registry` lists them
in pipeline order, and everything that names a stage derives from that one list: the ``mosear``
subcommands (:mod:`mosear.cli`), the pipeline order and wiring (:mod:`mosear.orchestrate.workdir`),
the request type (:class:`mosear.orchestrate.dispatch.StageRequest`), the cache keys and the Prefect
flows (:mod:`mosear.orchestrate.flows`).

Config classes, run functions and CLI modules are ``module:attribute`` strings imported on first
use, so the specs load without the stages' heavy dependencies (Ray, torch).

This module imports nothing of the stages and nothing of the registry: stage packages import it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosear.identity import marker_matches, read_marker

__all__ = ["StageSpec", "PipelinePaths", "committed", "local_path", "paths_of", "first_rejects"]


def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def local_path(p: str | os.PathLike | None) -> Path | None:
    """A local path, or None for object-storage URIs (their contents are not digested here)."""
    if p is None or "://" in str(p):
        return None
    return Path(p)


def paths_of(cfg: Any, *names: str) -> list[Path]:
    """The local paths held by the config fields ``names`` (a field may hold one path or a list)."""
    out: list[Path] = []
    for name in names:
        value = getattr(cfg, name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        out.extend(p for v in values if (p := local_path(v)) is not None)
    return out


def committed(output: Path, identity: dict[str, Any] | None = None) -> bool:
    """The completion rule every stage uses: ``{output}/commit.json`` says ``complete``
    (and, given ``identity``, records exactly that identity). The marker is written last."""
    if identity is not None:
        return marker_matches(output, identity)
    m = read_marker(output)
    return bool(m) and m.get("status") == "complete"


@dataclass(frozen=True)
class PipelinePaths:
    """What a stage's pipeline wiring sees: the corpus, every stage's output folder under the workdir
    (by stage name) and the checkpoints the train stage leaves (by method: ``lora``, ``mose``)."""

    corpus: str
    outputs: dict[str, Path]
    checkpoints: dict[str, Path]

    def output(self, stage: str) -> Path:
        return self.outputs[stage]


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage.

    - ``name``: the ``mosear`` subcommand, the pipeline's name for it, the Prefect flow ``mosear-{name}``;
    - ``help``: its one line in ``mosear --help``;
    - ``config`` / ``run`` / ``cli``: ``module:attribute`` of its :class:`~mosear.config.StageConfig`
      class, of ``run(cfg) -> result`` (writes ``{output}/commit.json`` last) and the CLI module
      (``add_arguments(parser)``, ``main(args) -> int``);
    - ``folder``: its output folder under a pipeline workdir;
    - ``inputs(cfg)``: the local paths whose *content* determines the output (their digests are the
      input half of the stage's identity, :func:`mosear.identity.stage_identity`);
    - ``wire(paths)``: the config fields a pipeline sets from the upstream outputs
      (:class:`PipelinePaths`), the only place a stage says which earlier outputs it reads;
    - ``path_fields``: config fields holding local paths (cluster jobs get them absolute, see
      :func:`mosear.orchestrate.ray_jobs.absolutize_paths`): ``"a[].b"`` is field b of each item of
      list a; a trailing ``"!"`` fills a missing value with the current folder;
    - ``artifacts``: the outputs worth a link, label -> path relative to the output folder;
    - ``rejects``: what the stage set aside, label -> a Parquet file under the output folder with a ``key``
      and a ``reason`` column (e.g. ``{"quarantined": "quarantine.parquet"}``): the pipeline prints and
      records the count and the first few with their reasons (:func:`first_rejects`);
    - ``complete(output, identity)``: the completion rule (default :func:`committed`).
    """

    name: str
    help: str
    config: str
    run: str
    cli: str
    folder: str
    inputs: Callable[[Any], list[Path]]
    wire: Callable[[PipelinePaths], dict[str, Any]]
    path_fields: tuple[str, ...] = ()
    artifacts: dict[str, str] = field(default_factory=dict)
    rejects: dict[str, str] = field(default_factory=dict)
    complete: Callable[[Path, dict[str, Any] | None], bool] = committed

    def output(self, cfg: Any) -> Path:
        """The stage's output folder: every stage config names it ``output``."""
        return Path(cfg.output)

    def config_cls(self) -> type:
        """The stage's config class (a :class:`~mosear.config.StageConfig` subclass)."""
        return _import(self.config)

    def run_fn(self) -> Callable[[Any], Any]:
        """``run(cfg)``: imports the stage's code (Ray, torch, ...) on first call."""
        return _import(self.run)

    def is_complete(self, output: Path, identity: dict[str, Any] | None = None) -> bool:
        """True when ``output`` holds a complete result (of ``identity``, when given)."""
        return self.complete(Path(output), identity)


def first_rejects(spec: StageSpec, output: Path, n: int = 3) -> list[tuple[str, int, list[str], Path]]:
    """Per reject file of ``spec`` under ``output``: ``(label, count, first n "key: reason (detail)", path)``.

    Files that are absent or unreadable are left out (a reject list is a report, never a reason to fail).
    """
    out = []
    for label, rel in spec.rejects.items():
        path = Path(output) / rel
        if not path.is_file():
            continue
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        except Exception:  # noqa: BLE001 - see the docstring
            continue
        cols = set(table.column_names)
        rows = table.slice(0, n).to_pylist()
        first = []
        for r in rows:
            detail = next((str(r[c]) for c in ("error", "detail") if c in cols and r.get(c)), "")
            detail = detail.strip().splitlines()[-1][:160] if detail.strip() else ""
            first.append(f"{r.get('key')}: {r.get('reason')}" + (f" ({detail})" if detail else ""))
        out.append((label, table.num_rows, first, path))
    return out
