"""Bad inputs are clear errors before Ray starts or a model is built (no Ray needed here)."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from mosear.config import ConfigError, load_config
from mosear.train.config import TrainConfig
from mosear.train.preflight import preflight


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = {"output": str(tmp_path / "out"), "max_steps": 4, "warmup_steps": 1}
    base.update(kw)
    return load_config(TrainConfig, overrides=base)


def _copy_shard_without(src: Path, dst_dir: Path, drop_ext: str) -> Path:
    """A committed copy of shard ``src`` whose samples lack the ``drop_ext`` member."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin:
            if info.name.split(".", 1)[1] == drop_ext:
                continue
            tout.addfile(info, io.BytesIO(tin.extractfile(info).read()))
    stem = src.name[: -len(".tar")]
    for extra in (".stats.json", ".index.parquet"):
        shutil.copyfile(src.with_name(stem + extra), dst_dir / (stem + extra))
    return dst


def test_good_inputs_pass(train_shards, tmp_path):
    plan = preflight(_cfg(tmp_path, shards=[str(train_shards)]))
    assert len(plan.shards) >= 2 and plan.resume_step == 0
    # storage_path as a URI goes through pyarrow's filesystem layer (as s3:// or gs:// would)
    plan = preflight(_cfg(tmp_path, shards=[str(train_shards)], storage_path=f"file://{tmp_path / 'ckpt'}"))
    assert (tmp_path / "ckpt").is_dir() and not list((tmp_path / "ckpt").iterdir())  # probe removed


@pytest.mark.parametrize("case,match", [
    ("empty_folder", "no committed shards"),
    ("missing_folder", "does not exist"),
    ("empty_list", "shards=\\[...\\] is empty"),
    ("no_wav", "lacks member\\(s\\) \\['wav'\\]"),
    ("no_frames", "lacks member\\(s\\) \\['frames.npy'\\]"),
    ("storage_under_a_file", "storage_path .* is not writable"),
    ("output_under_a_file", "output .* is not writable"),
    ("fsdp_on_cpu", "strategy=fsdp needs use_gpu=true"),
    ("bad_model_field", "(?s)model: .*adaptor: unknown field"),
])
def test_bad_inputs_are_refused_early(train_shards, tmp_path, case, match):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    shard0 = sorted(Path(train_shards).glob("*.tar"))[0]
    kw = {
        "empty_folder": {"shards": [str(empty)]},
        "missing_folder": {"shards": [str(tmp_path / "nope")]},
        "empty_list": {"shards": []},
        "no_wav": {"shards": [str(_copy_shard_without(shard0, tmp_path / "s1", "wav").parent)]},
        "no_frames": {"shards": [str(_copy_shard_without(shard0, tmp_path / "s2", "frames.npy").parent)]},
        "storage_under_a_file": {"shards": [str(train_shards)], "storage_path": str(a_file / "ckpt")},
        "output_under_a_file": {"shards": [str(train_shards)], "output": str(a_file / "out")},
        "fsdp_on_cpu": {"shards": [str(train_shards)], "strategy": "fsdp"},
        "bad_model_field": {"shards": [str(train_shards)], "model": {"preset": "tiny", "adaptor": "lora"}},
    }[case]
    with pytest.raises(ConfigError, match=match):
        preflight(_cfg(tmp_path, **kw))


def test_a_mix_naming_no_shard_sample_is_refused(train_shards, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    mix = tmp_path / "train_mix.parquet"
    pq.write_table(pa.table({"key": ["other__x"], "shard": ["s"], "subset": ["consistent"], "weight": [1.0],
                             "target": ["t"]}), mix)
    with pytest.raises(ConfigError, match="none of the 1 keys"):
        preflight(_cfg(tmp_path, shards=[str(train_shards)], mix=str(mix)))


def test_plan_lists_the_mix_keys_the_shards_hold(train_shards, tmp_path):
    """With a mix: its keys with a positive weight that a shard holds (the recorded training keys)."""
    import pandas as pd
    import pyarrow.parquet as pq

    keys = [r["key"] for f in sorted(train_shards.glob("*.index.parquet")) for r in pq.read_table(f).to_pylist()]
    mix = tmp_path / "train_mix.parquet"
    pd.DataFrame({"key": [keys[0], keys[1], keys[2], "ravdess__not-held"], "shard": "x", "subset": "consistent",
                  "weight": [1.0, 0.0, 2.0, 1.0], "target": "t"}).to_parquet(mix)
    plan = preflight(_cfg(tmp_path, shards=[str(train_shards)], mix=str(mix)))
    assert plan.train_keys == sorted([keys[0], keys[2]])
    assert plan.train_keys_source.startswith("mix: ")
    # each trained key's clip bytes, as the shard index records them (the eval protocol's clip identity)
    sha = {r["key"]: r["source_sha256"] for f in sorted(train_shards.glob("*.index.parquet")) for r in pq.read_table(f).to_pylist()}
    assert plan.train_sources == {k: sha[k] for k in plan.train_keys} and all(len(v) == 64 for v in plan.train_sources.values())


def test_features_model_needs_a_feature_table_with_its_keys(train_shards, tmp_path):
    import pyarrow.parquet as pq

    from mosear.model.features import write_features_table

    keys = [r["key"] for f in sorted(train_shards.glob("*.index.parquet")) for r in pq.read_table(f).to_pylist()]
    model = {"preset": "tiny", "inputs": "features", "visual_feature_dim": 3, "audio_feature_dim": 2}
    with pytest.raises(ConfigError, match="needs a feature table"):
        preflight(_cfg(tmp_path, shards=[str(train_shards)], model=model))
    table = tmp_path / "features.parquet"
    write_features_table(table, [{"key": "other", "visual": [1, 2, 3], "audio": [1, 2]}], {"visual": 3, "audio": 2}, {})
    with pytest.raises(ConfigError, match=f"none of the {len(set(keys))} training keys"):
        preflight(_cfg(tmp_path, shards=[str(train_shards)], model=model, features=str(table)))
    with pytest.raises(ConfigError, match="has dimensions"):
        preflight(_cfg(tmp_path, shards=[str(train_shards)], model={**model, "audio_feature_dim": 5},
                       features=str(table)))
    write_features_table(table, [{"key": k, "visual": [1, 2, 3], "audio": None} for k in keys],
                         {"visual": 3, "audio": 2}, {})
    plan = preflight(_cfg(tmp_path, shards=[str(train_shards)], model=model, features=str(table)))
    assert plan.features == str(table.resolve())
