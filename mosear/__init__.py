"""mosear: conflict-aware multimodal emotion reasoning (CA-MER benchmark building, MoSEAR training).

Subpackages: ``media`` (probe/decode), ``shards`` (WebDataset writer/reader), ``adapters`` (datasets),
``mine`` (conflict mining stages), ``model`` (backbone, MoSE peft method, AR attention),
``train`` (Ray Train recipe), ``evaluate`` (fan-out, metrics, report). Importing ``mosear`` itself
is cheap: nothing heavy is imported here.
"""

__version__ = "0.1.0"
