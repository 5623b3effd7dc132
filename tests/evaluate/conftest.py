"""Fixtures of the evaluation tests: real shards of the sample corpus, a CA-MER-style benchmark over
their keys, and real tiny-model checkpoints (``save_adapter`` output of the real model).

The benchmark JSON files are benchmark *inputs* (what ``mosear mine`` or the CA-MER release provide);
its subsets are assigned round-robin here, which is fine for testing the evaluation machinery.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

SUBSETS = ("video_aligned", "audio_aligned", "consistent")
MISSING_KEY = "ravdess__not-in-any-shard"


@pytest.fixture(scope="session")
def eval_shards(ray_local, samples_dir, tmp_path_factory) -> Path:
    """The sample corpus sharded once (4 frames of 32x32: the tiny model's input size)."""
    from mosear.config import load_config
    from mosear.shards import run_shard
    from mosear.shards.config import ShardConfig

    out = tmp_path_factory.mktemp("eval-shards") / "shards"
    cfg = load_config(ShardConfig, overrides={
        "corpus": str(samples_dir / "corpus.yaml"), "output": str(out), "num_frames": 4, "height": 32,
        "width": 32, "samples_per_shard": 8, "progress": False,
    })
    run_shard(cfg)
    return out


@pytest.fixture(scope="session")
def shard_keys(eval_shards) -> list[tuple[str, str]]:
    from mosear.shards.reader import iter_samples, list_shards

    return [(s["key"], s["meta"]["label"]) for s in iter_samples(list_shards(eval_shards))]


def write_camer(root: Path, keys: list[tuple[str, str]], n: int = 9, missing: bool = True) -> Path:
    """CA-MER-style subset files over the first ``n`` keys (+ one key that is in no shard)."""
    root.mkdir(parents=True, exist_ok=True)
    subs: dict[str, dict] = {s: {} for s in SUBSETS}
    for i, (k, lab) in enumerate(keys[:n]):
        subs[SUBSETS[i % 3]][k] = {"reason": f"The face looks {lab}, while the voice sounds tense.", "label": lab}
    if missing:
        subs["consistent"][MISSING_KEY] = {"reason": "A sad face and a sad voice.", "label": "sad"}
    for s, rows in subs.items():
        (root / f"{s}.json").write_text(json.dumps(rows, indent=1))
    return root


@pytest.fixture(scope="session")
def missing_key() -> str:
    return MISSING_KEY


@pytest.fixture(scope="session")
def camer_bench(tmp_path_factory, shard_keys) -> Path:
    return write_camer(tmp_path_factory.mktemp("bench") / "camer", shard_keys)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two real adapter folders of the tiny model: MoSE and the plain-LoRA baseline."""
    from mosear.model import ModelConfig, build_model

    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for adapter in ("mose", "lora"):
        d = root / adapter / "adapter"
        build_model(ModelConfig(preset="tiny", adapter=adapter)).save_adapter(d)
        out[adapter] = d
    return out


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
