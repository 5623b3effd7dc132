"""Where a ``mosear mine`` output's samples live (read by training and evaluation).

A mined folder's rows (``conflicts.parquet``, ``train_mix.parquet``, the subset JSON files) name samples
of two shard folders: the input shards recorded in its ``run.json`` (``config.shards``) and the
counterfactual clips it spliced itself (``spliced/``). Consumers resolve keys against both. A split
folder of the output (``mined/test``, holding that split's subset files) draws on the same folders.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["mined_shard_dirs"]


def mined_shard_dirs(root: str | Path) -> list[str]:
    """Existing shard folders the mined output ``root`` draws on: its input, then ``spliced/``."""
    root = Path(root)
    if not (root / "run.json").is_file() and (root.parent / "run.json").is_file():
        root = root.parent  # a split folder (mined/test): the samples are the whole output's
    dirs: list[str] = []
    run = root / "run.json"
    if run.is_file():
        src = (json.loads(run.read_text()).get("config") or {}).get("shards")
        if src:
            p = Path(src)
            for c in (p, root / p, root.parent / p):  # relative paths: as run, or beside the output
                if c.is_dir():
                    dirs.append(str(c))
                    break
    if (root / "spliced").is_dir():
        dirs.append(str(root / "spliced"))
    return dirs
