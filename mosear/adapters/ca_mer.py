"""CA-MER (MoSEAR's benchmark): the released per-subset JSON files over MER2023 clips.

``source.manifest``: the folder with ``video_aligned.json``, ``audio_aligned.json``, ``consistent.json``
(a missing file is skipped; none at all is an error). Each maps a sample name to its ground truth:
either the free-text reasoning (a string) or an object whose text is under ``reason`` / ``caption`` /
``description`` and whose label, if given, is under ``label`` / ``emotion``. The split of a clip is its
subset name (so shards come per subset); the reasoning is kept in ``extra.reason``.
Videos: ``{root}/**/{name}.{mp4,avi,...}`` (the MER2023 clips); a name without its video is quarantined as
``missing`` at plan time (naming where it was looked for), a video no subset names is reported as skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from mosear.adapters.base import ClipIndex, ClipRecord, DatasetAdapter

SUBSETS = ("video_aligned", "audio_aligned", "consistent")
_TEXT_FIELDS = ("reason", "caption", "description", "smp_reason_caption", "text")


class CaMerAdapter(DatasetAdapter):
    name = "ca_mer"

    def check(self, root: Path, source) -> None:
        super().check(root, source)
        if source.manifest is None:
            raise ValueError("CA-MER needs `manifest`: the folder with the per-subset JSON files")
        if not any((source.manifest_path() / f"{s}.json").is_file() for s in SUBSETS):
            raise ValueError(f"no {', '.join(s + '.json' for s in SUBSETS)} in {source.manifest_path()}")

    def clips(self, root: Path, source) -> Iterator[ClipRecord]:
        index = ClipIndex(self, root, source, exclude=(source.manifest_path(),))
        for subset in SUBSETS:
            f = source.manifest_path() / f"{subset}.json"
            if not f.is_file():
                continue
            data = json.loads(f.read_text(encoding="utf-8"))
            items = data.items() if isinstance(data, dict) else ((d.get("name") or d.get("video"), d) for d in data)
            for name, gt in items:
                name = str(name)
                if isinstance(gt, dict):
                    reason = next((gt[k] for k in _TEXT_FIELDS if gt.get(k)), None)
                    raw_label = gt.get("label") or gt.get("emotion")
                else:
                    reason, raw_label = (str(gt) if gt is not None else None), None
                yield index.clip([name], name, split=subset, orig_label=raw_label,
                                 extra={"subset": subset, "reason": reason})
        index.finish()
