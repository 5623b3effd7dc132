"""mosear's built-in mining stages, listed in :data:`mosear.mine.stage_pipeline.BUILTIN_STAGES` (the one list)."""


class EvidenceModelError(ImportError):
    """An evidence model's package is not installed, lacks its model file, or the file does not load.

    Raised, in one line naming the model, the stage and what to install, when a stage is built (when a
    mining config's pipeline is read: ``MineConfig.stage_hash`` turns it into a ``ConfigError``), so it
    stops the job before any shard is mined. An ``ImportError``: the package is unusable as installed.
    """
