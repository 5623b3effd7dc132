"""``ShardConfig``: what ``mosear shard`` reads, validated before any work starts.

Example (``mosear shard --config shard.yaml num_frames=8``)::

    corpus: datasets/samples/corpus.yaml   # or an inline list under `sources:`
    output: runs/samples/shards
    num_frames: 16
    height: 224
    width: 224
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator, model_validator

from mosear.adapters import ADAPTERS
from mosear.adapters.source import SourceConfig, _normpath
from mosear.config import INPUT, LOCATION, SCHEDULING, StageConfig

__all__ = ["SourceConfig", "ShardConfig"]


class ShardConfig(StageConfig):
    """Configuration of the shard stage (see docs/shard.md)."""

    corpus: Path | None = Field(None, json_schema_extra=INPUT,
                                description="corpus YAML listing `sources:` (paths relative to the file); "
                                "a folder: its corpus.yaml, or else every video in it (generic adapter, no labels)")
    sources: list[SourceConfig] = Field(default_factory=list, description="sub-corpora, each read by its adapter")
    output: Path = Field(Path("runs/shards"), json_schema_extra=LOCATION, description="output folder of this run")
    num_frames: int = Field(16, ge=1, le=512, description="frames per clip, uniformly sampled")
    height: int = Field(224, ge=8, le=4096, description="frame height, pixels")
    width: int = Field(224, ge=8, le=4096, description="frame width, pixels")
    resize: Literal["crop", "pad"] = Field("crop", description="aspect-preserving resize, then center crop or pad")
    sample_rate: int = Field(16000, ge=8000, le=96000, description="audio sample rate, Hz (mono)")
    missing_audio: Literal["quarantine", "silence"] = Field(
        "quarantine", description="a clip without audio: quarantine it, or keep it with silence (has_audio=false)")
    passthrough: bool = Field(False, description="also store the original compressed clip in the sample")
    samples_per_shard: int = Field(256, ge=1, description="most samples in one shard")
    target_shard_mb: float = Field(
        512.0, gt=0, description="byte target per shard, MB: limits samples per shard using the fixed frame "
        "size plus expected_clip_s of audio (shards are planned before decoding, so keys stay put)")
    expected_clip_s: float = Field(10.0, gt=0, description="clip length assumed when sizing shards, seconds")
    workers: int | None = Field(None, ge=1, json_schema_extra=SCHEDULING, description="parallel shard writers (default: the CPUs Ray has)")
    decode_threads: int = Field(1, ge=0, json_schema_extra=SCHEDULING, description="libav threads per clip (0 = auto)")
    ray_address: str | None = Field(None, json_schema_extra=SCHEDULING, description="Ray cluster address; none: embedded local Ray")
    progress: bool = Field(True, json_schema_extra=SCHEDULING, description="show a progress bar")
    allow_partial: bool = Field(False, json_schema_extra=SCHEDULING, description="a shard that fails to build leaves the stage failed "
                                "(exit 1) unless this is true: then the others are committed with status partial")
    max_item_error_fraction: float = Field(
        0.0, ge=0, le=1, json_schema_extra=SCHEDULING,
        description="largest share of inputs that may be quarantined (data errors: bad clips, names, labels) "
        "before the stage fails (exit 1, counts by reason; shards, quarantine and run.json are kept, no "
        "commit.json); 0: any quarantined input fails the stage. A label row whose clip is not there (a partial "
        "download, reason missing) is coverage, reported as 'N of M label rows have a clip', not counted here")
    overwrite: bool = Field(False, json_schema_extra=SCHEDULING, description="delete an output written by another config instead of stopping")

    @field_validator("corpus")
    @classmethod
    def _corpus_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).exists():
            raise ValueError(f"corpus {v} does not exist")
        return v

    @model_validator(mode="after")
    def _load_corpus(self) -> "ShardConfig":
        if self.corpus is not None and not self.sources and Path(self.corpus).is_dir():
            folder = Path(_normpath(Path(self.corpus)))
            if not (folder / "corpus.yaml").is_file():
                object.__setattr__(self, "sources", [SourceConfig(adapter="generic", root=folder, base_dir=folder)])
        if self.corpus is not None and not self.sources:
            path = Path(self.corpus)
            if path.is_dir():
                path = path / "corpus.yaml"
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"corpus {path} is not valid YAML: {exc}") from None
            if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
                raise ValueError(f"corpus {path}: needs a `sources:` list")
            base = Path(_normpath(path.parent))
            srcs = [SourceConfig.model_validate({**s, "base_dir": s.get("base_dir", base)}) for s in data["sources"]]
            object.__setattr__(self, "sources", srcs)  # bypass validate_assignment recursion
        if not self.sources:
            raise ValueError("no sources: give `corpus` (a corpus YAML) or a `sources` list")
        base = Path.cwd()
        for i, s in enumerate(self.sources):
            if s.base_dir is None:
                s.base_dir = base
            if s.adapter not in ADAPTERS:
                raise ValueError(f"sources.{i}.adapter: unknown adapter {s.adapter!r}; "
                                 f"known: {', '.join(sorted(ADAPTERS))}")
            options = ADAPTERS[s.adapter].options_model
            if options is not None:  # the adapter's own options, checked before any work
                try:
                    options.model_validate(s.options)
                except ValueError as exc:
                    raise ValueError(f"sources.{i}.options ({s.adapter}): {exc}") from None
        return self

    def shard_hash(self) -> str:
        """The config hash recorded in every stats JSON and run.json (fields marked as affecting output)."""
        return self.output_hash()

    def frame_bytes(self) -> int:
        return self.num_frames * self.height * self.width * 3

    def planned_samples_per_shard(self) -> int:
        """``samples_per_shard`` capped by the byte target (frames + expected audio per sample)."""
        per_sample = self.frame_bytes() + int(self.expected_clip_s * self.sample_rate * 2) + 2048
        return max(1, min(self.samples_per_shard, int(self.target_shard_mb * 1e6 // per_sample)))
