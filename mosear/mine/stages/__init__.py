"""mosear's built-in mining stages, listed in :data:`mosear.mine.stage_pipeline.BUILTIN_STAGES` (the one list)."""
