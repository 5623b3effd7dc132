"""The same command on the same corpus and config gives the same bytes, whatever the worker count:
natural shards, spliced shards, evidence and the mined tables (run twice, 1 and 2 workers)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mosear.config import load_config

SHARD = {"num_frames": 4, "height": 64, "width": 64, "samples_per_shard": 5, "progress": False}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _run(samples_dir: Path, root: Path, workers: int, hf_audio: Path) -> Path:
    from mosear.mine.config import DEFAULT_STAGES, MineConfig
    from mosear.mine.run import run_mine
    from mosear.shards.config import ShardConfig
    from mosear.shards.run import run_shard

    shards = root / "shards"
    run_shard(load_config(ShardConfig, None, {  # the 27 RAVDESS clips: 6 shards; 6 splices: 2 shards
        "sources": [{"adapter": "ravdess", "root": str(samples_dir / "ravdess")},
                    {"adapter": "splice", "root": str(samples_dir),
                     "options": {"faces": "ravdess", "voices": "ravdess_audio", "max_pairs": 6}}],
        "output": str(shards), "workers": workers, **SHARD}))
    run_mine(load_config(MineConfig, None, {
        "shards": str(shards), "output": str(root / "mined"), "workers": workers, "progress": False,
        "batch_size": 3 if workers == 1 else 4,  # batch composition must not matter either
        "stages": [*DEFAULT_STAGES, {"stage": "hf_classifier", "params": {"model_path": str(hf_audio)}}]}))
    return root


@pytest.mark.slow
def test_two_runs_with_different_worker_counts_give_the_same_bytes(samples_dir, tmp_path, ray_local, tiny_models):
    """The default pipeline plus a transformers audio classifier (a local random-weight wav2vec2)."""
    a = _run(samples_dir, tmp_path / "a", workers=1, hf_audio=tiny_models / "audio")
    b = _run(samples_dir, tmp_path / "b", workers=2, hf_audio=tiny_models / "audio")
    for folder in ("shards",):  # natural and spliced shards alike
        tars = sorted(p.name for p in (a / folder).glob("*.tar"))
        assert tars and tars == sorted(p.name for p in (b / folder).glob("*.tar"))
        assert [n for n in tars if n.startswith("spliced-")] == ["spliced-000000.tar", "spliced-000001.tar"]
        for name in tars:
            assert _sha(a / folder / name) == _sha(b / folder / name), f"{folder}/{name} differs"
            index = name.replace(".tar", ".index.parquet")
            assert pq.read_table(a / folder / index).equals(pq.read_table(b / folder / index)), index
            sa, sb = (json.loads((r / folder / name.replace(".tar", ".stats.json")).read_text()) for r in (a, b))
            assert sa["tar_sha256"] == sb["tar_sha256"] and sa["keys_digest"] == sb["keys_digest"]
            if name.startswith("spliced-"):  # what made them, for a rebuild elsewhere
                assert sa["splice_format"] == "mov-pcm16-bitexact" and sa["ffmpeg"].startswith("ffmpeg version")
    evidence = sorted(p.name for p in (a / "mined" / "evidence").glob("*.parquet"))
    assert len(evidence) == 2 * (6 + 2)  # evidence + audit per shard: 6 natural, 2 spliced
    for name in evidence:  # bytes (a table compare would call NaN features unequal)
        assert _sha(a / "mined" / "evidence" / name) == _sha(b / "mined" / "evidence" / name), name
    for name in ("conflicts.parquet", "train_mix.parquet", "dropped.parquet", "consistent.json",
                 "video_aligned.json", "audio_aligned.json", "ambiguous.json", "spliced.json"):
        assert (a / "mined" / name).read_bytes() == (b / "mined" / name).read_bytes(), name
    conflicts = pd.read_parquet(a / "mined" / "conflicts.parquet")
    assert (conflicts["origin"] == "spliced").sum() == 6 and conflicts["subset"].nunique() >= 2
