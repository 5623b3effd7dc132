"""Training metrics: one JSON row per logged step to ``{output}/metrics.jsonl``, optionally TensorBoard.

A row holds ``step`` (optimizer steps done), ``loss`` (mean over micro-batches and workers), ``lr``
(the rate the step used), ``samples_per_s`` and ``tokens_per_s`` (all workers, wall time of the
interval), ``data_share`` (fraction of the interval rank 0 spent waiting for data), ``grad_norm``,
``epoch`` and the model's auxiliary scalars (gate load per modality and expert, modality weights,
the regularizer), each under its own key. Written by rank 0 only, through the atomic writer
(:mod:`mosear.atomic`): the whole file is rewritten (fsynced, renamed) per row, so a killed run loses
nothing it reported and never leaves a torn last line; truncated to the checkpoint's step on resume (no
duplicate rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mosear.atomic import atomic_write

__all__ = ["MetricsLogger", "read_metrics_file"]


def read_metrics_file(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


class MetricsLogger:
    """Appends metric rows to a JSONL file (and TensorBoard when enabled); keeps them for checkpoints."""

    def __init__(self, output: str | Path, rows: list[dict[str, Any]] | None = None, tensorboard: bool = False):
        self.dir = Path(output)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.rows: list[dict[str, Any]] = list(rows or [])
        # Rewrite the file from the rows we resume with: rows past the checkpoint are dropped.
        self._write()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events past the resume point, like the JSONL truncation above.
            start = self.rows[-1]["step"] + 1 if self.rows else None
            self._tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=start)

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write()
        if self._tb is not None:
            step = int(row["step"])
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k.replace("_", "/", 1) if k.startswith(("gate", "modality")) else k, v, step)
            self._tb.flush()

    def _write(self) -> None:
        """Rewrite ``metrics.jsonl`` from ``self.rows`` atomically (rows are few: one per logged step)."""
        atomic_write(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
