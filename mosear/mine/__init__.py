"""Conflict mining: extensible stages that find and label audio/visual emotion conflicts (CA-MER builder).

Public API: :class:`MiningStage`, :class:`FilterStage`, :class:`Resources`, :class:`Drop`
(``mosear.mine.stage``), :class:`StagePipeline` (``mosear.mine.stage_pipeline``), :class:`MineConfig`,
:func:`run_mine`. See ``docs/mining.md``.
"""

from mosear.mine.stage import Drop, FilterStage, MiningStage, Resources

__all__ = ["MineConfig", "MiningStage", "FilterStage", "Resources", "Drop", "run_mine", "StagePipeline"]


def __getattr__(name: str):  # heavy imports (ray; pydantic: ~80 ms in every mining actor) only when asked for
    if name == "MineConfig":
        from mosear.mine.config import MineConfig

        return MineConfig
    if name == "run_mine":
        from mosear.mine.run import run_mine

        return run_mine
    if name == "StagePipeline":
        from mosear.mine.stage_pipeline import StagePipeline

        return StagePipeline
    raise AttributeError(name)
