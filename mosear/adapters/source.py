"""``SourceConfig``: one sub-corpus of a shard run, read by one adapter (the adapters' input).

It lives beside the adapters, not in :mod:`mosear.shards.config`, so that the dependency runs one way:
the shard stage's config imports the adapters, the adapters never import the shard stage. Which
adapter names exist is checked by :class:`mosear.shards.config.ShardConfig` (which knows the registry),
and each adapter validates its own ``options`` (:attr:`mosear.adapters.base.DatasetAdapter.options_model`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["SourceConfig"]


def _normpath(p: Path) -> str:
    return os.path.normpath(os.path.abspath(p))


class SourceConfig(BaseModel):
    """One sub-corpus read by one adapter."""

    model_config = ConfigDict(extra="forbid")

    adapter: str = Field(description="adapter name: generic, ravdess, crema_d, mer2023, dfew, mafw, ca_mer, splice")
    root: Path = Field(description="corpus root folder (relative paths: to base_dir)")
    manifest: Path | None = Field(None, description="manifest / label file (relative: to base_dir)")
    dataset: str | None = Field(None, description="dataset name in keys (default: the adapter's name)")
    split: str = Field("train", description="split for clips whose adapter assigns none")
    options: dict[str, Any] = Field(default_factory=dict, description="adapter-specific options (see its card)")
    extensions: list[str] = Field(default_factory=list, description="file extensions to shard besides the video "
                                  "containers and raw streams mosear knows (mosear.adapters.VIDEO_EXTENSIONS), "
                                  "e.g. ['.dat']: any file libav opens")
    base_dir: Path | None = Field(None, description="folder relative paths resolve against (set by the loader)")

    @field_validator("extensions")
    @classmethod
    def _dotted_lowercase(cls, v: list[str]) -> list[str]:
        out = []
        for ext in v:
            e = ext.strip().lower()
            e = e if e.startswith(".") else "." + e
            if len(e) < 2 or "/" in e or any(c.isspace() for c in e):
                raise ValueError(f"extension {ext!r}: expected a file extension such as '.dat'")
            out.append(e)
        return sorted(set(out))

    @field_validator("split")
    @classmethod
    def _safe_split(cls, v: str) -> str:
        if not v or any(not (c.isascii() and (c.isalnum() or c in "_-")) for c in v):
            raise ValueError("split names use [A-Za-z0-9_-] (they name shard files)")
        return v

    @field_validator("dataset")
    @classmethod
    def _safe_dataset(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(not (c.isascii() and (c.isalnum() or c in "_-")) for c in v) or "__" in v):
            raise ValueError("dataset names use [A-Za-z0-9_-] without '__' (they prefix sample keys)")
        return v

    def _abs(self, p: Path) -> Path:
        p = Path(p).expanduser()
        return p if p.is_absolute() else Path(self.base_dir or Path.cwd()) / p

    def resolve(self, p: str | Path) -> Path:
        """``p`` made absolute against ``base_dir`` (adapters use it for option paths)."""
        return self._abs(Path(p))

    def root_path(self) -> Path:
        return Path(_normpath(self._abs(self.root)))

    def manifest_path(self) -> Path:
        assert self.manifest is not None
        return self._abs(self.manifest)
