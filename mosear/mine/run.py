"""``run_mine(cfg)``: the mining job (a pool of Ray actors over shards), resumable per shard.

1. Mine every committed shard of ``shards`` (natural clips and the counterfactual splices the shard stage
   wrote from the corpus alike) not finished yet: a pool of Ray actors, one per worker, each holding
   the stage pipeline (models load once per actor), given one shard at a time (:func:`mine_shards`);
   each actor streams its shard's samples through the stages in batches and commits the shard's
   evidence with a stats JSON written last (``{output}/evidence/``). A killed job resumes where it stopped.
2. Assemble: cross-fit the unimodal classifiers, assign subsets, caption, export (see ``assemble``).
3. ``run.json`` and, last, ``commit.json`` (the stage's marker: its identity, :mod:`mosear.identity`).

A shard that fails to mine leaves the stage failed (:class:`~mosear.orchestrate.errors.StageFailedError`,
exit 1, with the count and first reasons) before anything is assembled; the committed shards' evidence
stays, so a rerun mines only the failed ones. ``allow_partial=true`` assembles without them and marks
the output ``partial`` (``commit.json`` and ``summary.json`` list what is missing).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosear.atomic import atomic_write_json
from mosear.identity import (code_fingerprint, default_memo, digest_json, digest_paths, model_paths, stage_identity,
                             write_marker)
from mosear.mine.config import MineConfig
from mosear.mine.spec import SPEC
from mosear.mine.stage_pipeline import StagePipeline
from mosear.mine.worker import ShardMiner, is_done, shard_name
from mosear.orchestrate.errors import StageFailedError

log = logging.getLogger(__name__)


@dataclass
class MineResult:
    output: Path
    shards_total: int
    shards_mined: int
    shards_skipped: int
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # shard -> error (allow_partial only)


def _driver_path(py_modules: list[str]) -> None:
    """Make ``py_modules`` importable in this process too (the driver builds the pipeline once)."""
    from mosear.mine.stage_pipeline import add_import_paths

    add_import_paths(py_modules)


def _size(shard: Path) -> int:
    try:
        return Path(shard).stat().st_size
    except OSError:
        return 0


def _actor_failure(exc: BaseException) -> str:
    """A shard's error when its actor could not mine it (the actor died, or its stages failed to set up)."""
    msg = str(exc).strip().splitlines()
    return f"mining worker failed: {type(exc).__name__}: {msg[-1] if msg else 'the actor died'}"


def evidence_hash(cfg: MineConfig) -> str:
    """The hash a shard's evidence records and is reused by: the stage config's hash *and* the
    :func:`~mosear.identity.code_fingerprint` of the mining worker (a fixed bug in a built-in stage
    re-mines; a third-party stage counts by its declared version, part of ``stage_hash``) and the bytes
    of the model files and folders stage parameters name (:func:`~mosear.identity.model_paths`)."""
    models = {str(m): digest_paths([m], default_memo(cfg.output)) for m in model_paths(cfg.stages)}
    return digest_json([cfg.stage_hash(), code_fingerprint("mosear.mine.worker")["digest"], models])[:16]


def mine_shards(cfg: MineConfig, shards: list[Path]) -> tuple[int, int, dict[str, str]]:
    """Mine the shards not yet committed under ``{output}/evidence``; returns (mined, skipped, failed),
    ``failed`` mapping each shard that failed to its error.

    A pool of ``workers`` Ray actors (:class:`~mosear.mine.worker.ShardMiner`, each loading the stages' models
    once), created first so their start-up overlaps the driver's own; the largest shards first, one
    shard in flight per actor, so a free actor takes the next and the workers finish together. Plain
    actor calls, not a Ray Data map: the driver stays idle while the actors mine (Ray Data's
    streaming executor cost ~1 s of driver CPU per run and 0.1-0.2 s between two shards of an
    actor, measured in docs/shard.md "Mining"). An actor that dies (its process killed, its stages'
    ``setup`` raising) fails the shards it was given, which a rerun mines again; Ray restarts a
    killed actor for the next shard (up to 3 times).
    """
    from collections import deque

    from tqdm import tqdm

    from mosear.ray_utils import init_ray, wait_one

    out = Path(cfg.output)
    chash = evidence_hash(cfg)
    todo = [s for s in shards if not is_done(out, s, chash)]
    skipped = len(shards) - len(todo)
    if skipped:
        log.info("resuming: %d of %d shards already mined", skipped, len(shards))
    if not todo:
        return 0, skipped, {}
    ray = init_ray(cfg.address)
    _driver_path(cfg.py_modules)
    res = StagePipeline.from_spec(cfg.stages).resources  # validates names before any work
    # a killed actor is restarted for the next shard, a bounded number of times (a crash in set-up repeats)
    miner = ray.remote(ShardMiner).options(num_cpus=res.cpus, num_gpus=res.gpus or None, max_restarts=3)
    kwargs = {"stages": cfg.stages, "out_dir": str(out), "batch_size": cfg.batch_size, "config_hash": chash,
              "import_paths": [str(Path(m).resolve().parent) for m in cfg.py_modules]}
    actors = [miner.remote(**kwargs) for _ in range(min(cfg.workers, len(todo)))]  # start loading models now
    queue = deque(sorted(todo, key=lambda s: -_size(s)))  # largest first
    running: dict[Any, tuple[Any, Path]] = {}

    def give(actor: Any) -> None:
        if queue:
            shard = queue.popleft()
            running[actor.mine.remote(str(shard))] = (actor, shard)

    mined, failed, tries = 0, {}, Counter()
    try:
        for actor in actors:
            give(actor)
        with tqdm(total=len(todo), desc="mine", unit="shard", disable=not cfg.progress) as bar:
            while running:
                (ref,), _ = wait_one(list(running))  # interruptible by Ctrl-C (ray_utils.wait_one)
                actor, shard = running.pop(ref)
                try:
                    st = ray.get(ref)
                except ray.exceptions.ActorUnavailableError as exc:
                    # the actor died under this shard or was still restarting when it was handed over (the
                    # shard may never have run): one more try on the restarted actor; a shard that kills its
                    # actor twice fails with the reason
                    tries[shard] += 1
                    if tries[shard] < 2:
                        log.warning("shard %s: mining worker unavailable (%s); retrying it once",
                                    shard_name(shard), type(exc).__name__)
                        queue.appendleft(shard)
                        time.sleep(1.0)  # let Ray finish restarting the actor
                        give(actor)
                        continue
                    st = {"shard": shard_name(shard), "status": "failed", "error": _actor_failure(exc)}
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                    st = {"shard": shard_name(shard), "status": "failed", "error": _actor_failure(exc)}
                if st["status"] != "ok":
                    log.error("shard %s failed: %s", st["shard"], st["error"])
                    failed[st["shard"]] = st["error"]
                mined += 1
                bar.update(1)
                give(actor)
    finally:
        for actor in actors:
            ray.kill(actor)
    return mined, skipped, failed


def run_mine(cfg: MineConfig) -> MineResult:
    """Run the whole mining job (see the module docstring); returns counts and the summary."""
    from mosear.shards.reader import list_shards

    t0 = time.time()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "commit.json").unlink(missing_ok=True)  # a run in progress is not a complete output
    identity = stage_identity(SPEC, cfg)
    inputs = list_shards(cfg.shards) if cfg.shards else []
    if cfg.shards and not Path(cfg.shards).is_dir():
        raise FileNotFoundError(f"shard folder {cfg.shards} does not exist")
    shards = list(inputs)
    if not shards:
        raise FileNotFoundError(f"no committed shards in {cfg.shards!r}")
    mined, skipped, failed = mine_shards(cfg, shards)
    if failed and not cfg.allow_partial:
        raise StageFailedError("mosear mine", len(failed), len(shards), failed,
                               hint=" shards; nothing was assembled, the mined shards are kept and a rerun mines "
                               "only the failed ones (allow_partial=true assembles without them)")
    _driver_path(cfg.py_modules)
    pipeline = StagePipeline.from_spec(cfg.stages)  # its versions and declared features (no setup)
    from mosear.mine.assemble import assemble
    from mosear.mine.features import write_features

    write_features(out, [shard_name(s) for s in shards])  # before the exports; commit.json comes last
    summary = assemble(cfg, pipeline, [shard_name(s) for s in shards])  # reads committed (ok) evidence only
    if failed:
        summary["missing_shards"] = sorted(failed)
        atomic_write_json(out / "summary.json", summary, indent=1)
    result = MineResult(out, len(shards), mined, skipped, summary, round(time.time() - t0, 2),
                        failed)
    atomic_write_json(out / "run.json", {
        "config": cfg.model_dump(mode="json"), "stage_hash": cfg.stage_hash(), "shards": len(shards),
        "mined": mined, "skipped": skipped, "seconds": result.seconds,
        "failed": failed,
    }, indent=1)
    write_marker(out, identity, "partial" if failed else "complete", missing=sorted(failed),
                 missing_count=len(failed), totals={"shards": len(shards), "mined": mined, "skipped": skipped})
    return result
