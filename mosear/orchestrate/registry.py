"""The stage registry: the four stages, in pipeline order, each defined once in its own package.

```
shard  mosear/shards/spec.py    corpus -> WebDataset shards
mine   mosear/mine/spec.py      shards -> conflicts.parquet, subsets, splits, train_mix
train  mosear/train/spec.py     shards + train_mix -> adapter checkpoint
eval   mosear/evaluate/spec.py  checkpoints x benchmarks x settings -> metrics, report.html
```

Everything else that names a stage derives from :data:`STAGES`: the ``mosear`` subcommands
(:mod:`mosear.cli`), :data:`STAGE_ORDER`, the request type's ``stage`` field (:data:`StageName`), the
pipeline wiring (:mod:`mosear.orchestrate.workdir`, from each spec's ``wire``) and the Prefect flows
(:mod:`mosear.orchestrate.flows`). A new stage is one ``spec.py`` and one line here.
"""

from __future__ import annotations

from typing import Literal

from mosear.evaluate.spec import SPEC as EVAL
from mosear.mine.spec import SPEC as MINE
from mosear.orchestrate.spec import StageSpec
from mosear.shards.spec import SPEC as SHARD
from mosear.train.spec import SPEC as TRAIN

__all__ = ["STAGES", "STAGE_ORDER", "StageName", "StageSpec", "get_stage", "stage_available"]

STAGES: dict[str, StageSpec] = {spec.name: spec for spec in (SHARD, MINE, TRAIN, EVAL)}  # pipeline order

STAGE_ORDER: tuple[str, ...] = tuple(STAGES)

StageName = Literal[STAGE_ORDER]  # type: ignore[valid-type]  # "shard" | "mine" | "train" | "eval"


def get_stage(name: str) -> StageSpec:
    """The spec of stage ``name``; KeyError listing the stages otherwise."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {list(STAGES)}") from None


def stage_available(name: str) -> bool:
    """True when the stage's code imports (its optional dependencies are installed)."""
    try:
        get_stage(name).run_fn()
    except (ImportError, AttributeError):
        return False
    return True
