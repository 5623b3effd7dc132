"""The protocol of `mosear eval`: a checkpoint is not scored on keys it trained on (unless the user insists,
and then the report says so first); a checkpoint without recorded keys is flagged; AR calibrated on the
validation split and applied to test, the chosen values recorded; calibration without a validation split
is refused. Real tiny model, real shards."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from mosear.config import load_config
from mosear.evaluate.config import EvalConfig
from mosear.evaluate.fanout import run_eval
from mosear.train.keys import write_train_keys


def _cfg(out, ckpt, bench, shards, **kw) -> EvalConfig:
    over = {"checkpoints": [str(ckpt)], "output": str(out), "progress": False, "max_new_tokens": 2,
            "benchmarks": [{"name": "b", "format": "mined", "path": str(bench), "shards": str(shards)}],
            "settings": [{"name": "ar_off"}], "generate_reasoning": "never"}
    over.update(kw)
    return load_config(EvalConfig, overrides=over)


@pytest.fixture()
def trained_on(tmp_path, checkpoints, shard_keys):
    """A copy of the MoSE checkpoint that records the first 4 shard keys as its training keys."""
    ck = tmp_path / "ck" / "adapter"
    shutil.copytree(checkpoints["mose"], ck)
    write_train_keys(ck, [k for k, _ in shard_keys[:4]], "test")
    return ck


def test_overlap_is_refused_with_the_count(tmp_path, trained_on, shard_keys, eval_shards, camer_writer):
    from mosear.cli import main

    bench = camer_writer(tmp_path / "bench", shard_keys, n=9)  # its test split holds the 4 trained keys
    rc = main(["eval", f"checkpoints=[{trained_on}]", f"output={tmp_path / 'o'}", "progress=false",
               f"benchmarks=[{{name: b, format: mined, path: {bench}, shards: {eval_shards}}}]"])
    assert rc == 2
    assert not (tmp_path / "o" / "units").exists() or not list((tmp_path / "o" / "units").glob("*.parquet"))


def test_overlap_message_names_the_count(tmp_path, trained_on, shard_keys, eval_shards, camer_writer):
    from mosear.evaluate.protocol import OverlapError

    bench = camer_writer(tmp_path / "bench", shard_keys, n=9)
    with pytest.raises(OverlapError, match=r"trained on 4 of the 10 evaluated items of benchmark b"):
        run_eval(_cfg(tmp_path / "o", trained_on, bench, eval_shards))


def test_allowed_overlap_is_said_first_and_disjoint_split_runs(tmp_path, trained_on, shard_keys, eval_shards, camer_writer):
    bench = camer_writer(tmp_path / "bench", shard_keys, n=9)
    res = run_eval(_cfg(tmp_path / "o", trained_on, bench, eval_shards, allow_overlap=True))
    assert res.ok
    body = res.report.read_text().split("<body>", 1)[1].lstrip()
    assert body.startswith("<h1>mosear evaluation report</h1>")  # the title, then the warning first
    body = body.split("</h1>", 1)[1].lstrip()
    assert body.startswith('<p class="protocol-warning">WARNING: evaluated with allow_overlap: true')
    assert "trained on 4 of the 10 evaluated items" in body.split("</p>", 1)[0]
    # keys it did not train on: evaluated, nothing to warn about
    clean = camer_writer(tmp_path / "clean", shard_keys[4:], n=6, missing=False)
    res = run_eval(_cfg(tmp_path / "o2", trained_on, clean, eval_shards))
    assert res.ok and "protocol-warning\">" not in res.report.read_text()
    assert json.loads((tmp_path / "o2" / "protocol.json").read_text())["checkpoints"]["ck"]["benchmarks"]["b"]["shared"] == 0


def test_checkpoint_without_keys_is_flagged(tmp_path, checkpoints, shard_keys, eval_shards, camer_writer):
    bench = camer_writer(tmp_path / "bench", shard_keys, n=6, missing=False)
    res = run_eval(_cfg(tmp_path / "o", checkpoints["lora"], bench, eval_shards))
    assert res.ok
    assert "records no training keys" in res.report.read_text().split("<table", 1)[0]


def test_ar_calibrated_on_validation_applied_to_test(tmp_path, checkpoints, shard_keys, eval_shards, camer_writer):
    bench = camer_writer(tmp_path / "bench", shard_keys[:9], n=9, missing=False)
    val = camer_writer(tmp_path / "val", shard_keys[9:], n=9, missing=False)
    shutil.copytree(val / "test", bench / "validation")
    cfg = _cfg(tmp_path / "o", checkpoints["mose"], bench, eval_shards,
               settings=[{"name": "ar_off"}, {"name": "ar_calibrated", "ar": True, "calibrate": True}],
               calibration={"thresholds": [0.2, 0.6], "fractions": [0.5]})
    res = run_eval(cfg)
    assert res.ok, res.failed
    unit = next((res.output / "units").glob("*ar_calibrated*.parquet"))
    meta = json.loads(__import__("pyarrow.parquet", fromlist=["x"]).read_schema(unit).metadata[b"mosear.unit"])
    cal = meta["calibration"]
    assert cal["split"] == "validation" and len(cal["table"]) == 1 + 2  # no AR + 2 thresholds x 1 fraction
    assert sum(cal["items"].values()) == 9  # the validation items, none of the test items
    df = pd.read_parquet(unit)
    assert set(df["key"]) == {k for k, _ in shard_keys[:9]}
    assert (df["ar_fraction"] == cal["fraction"]).all() and (df["ar_threshold"] == cal["threshold"]).all()
    m = pd.read_parquet(res.output / "metrics.parquet")
    chosen = m[(m["setting"] == "ar_calibrated") & (m["metric"] == "calibrated_fraction")]["value"]
    assert chosen.tolist() == [cal["fraction"]]


def test_calibration_without_a_validation_split_is_refused(tmp_path, checkpoints, shard_keys, eval_shards, camer_writer):
    from mosear.evaluate.benchmark_files import BenchmarkFormatError

    bench = camer_writer(tmp_path / "bench", shard_keys, n=6, missing=False)
    cfg = _cfg(tmp_path / "o", checkpoints["mose"], bench, eval_shards,
               settings=[{"name": "ar_calibrated", "ar": True, "calibrate": True}])
    with pytest.raises(BenchmarkFormatError, match="setting ar_calibrated needs a validation split.*no validation/ split folder"):
        run_eval(cfg)
    # a validation split with an empty subset: named, with the counts
    (bench / "validation").mkdir()
    for s, rows in (("consistent", {shard_keys[0][0]: {"label": shard_keys[0][1], "reason": "x"}}),
                    ("video_aligned", {}), ("audio_aligned", {})):
        (bench / "validation" / f"{s}.json").write_text(json.dumps(rows))
    with pytest.raises(BenchmarkFormatError, match=r"\['video_aligned', 'audio_aligned'\] empty"):
        run_eval(cfg)


# ----------------------------------------------------------------- clip identity across datasets (issue 23)
def _overlap(ckpt, benches, allow=False):
    from types import SimpleNamespace

    from mosear.evaluate.protocol import check_overlap

    return check_overlap(SimpleNamespace(checkpoints=[str(ckpt)], allow_overlap=allow), benches)


def test_emer_names_against_a_mer2023_trained_checkpoint(tmp_path):
    """Catches: the overlap check comparing keys only, so EMER's clips (every one a MER2023 training clip)
    pass as unseen because the dataset prefixes differ (`emer__sample_…` vs `mer2023__sample_…`)."""
    import csv

    from mosear.evaluate.benchmark_files import load_benchmark
    from mosear.evaluate.config import BenchmarkSpec
    from mosear.evaluate.protocol import OverlapError, protocol_notes

    ck = tmp_path / "mer_ck" / "adapter"
    ck.mkdir(parents=True)
    write_train_keys(ck, [f"mer2023__sample_{i:08d}" for i in range(1, 11)], "shards (labelled samples)")
    with open(tmp_path / "emer.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["names", "emotions", "subtitles", "reasons"])
        for i, word in ((3, "生气"), (7, "高兴"), (42, "悲伤"), (43, "惊讶")):
            w.writerow([f"sample_{i:08d}", word, "字幕", "理由"])
    bench = load_benchmark(BenchmarkSpec(name="emer", format="emer", path=str(tmp_path / "emer.csv"),
                                         shards=str(tmp_path / "no-shards"), key_prefix="emer"))
    with pytest.raises(OverlapError, match=r"checkpoint mer_ck trained on 2 of the 4 evaluated items of benchmark emer "
                                           r"\(split default\) \(2 by MER clip name\)"):
        _overlap(ck, {"emer": bench})
    record = _overlap(ck, {"emer": bench}, allow=True)
    assert record["checkpoints"]["mer_ck"]["benchmarks"]["emer"]["shared_by"] == {"key": 0, "content": 0, "mer_name": 2}
    assert protocol_notes(record)[0].startswith("WARNING: evaluated with allow_overlap: true")


def test_same_bytes_under_other_names_are_the_same_clip(tmp_path, samples_dir, ray_local):
    """Catches: a benchmark whose clips are the training clips under other file names and another dataset
    prefix passing the overlap check. Real chain: `mosear shard` records each clip's SHA-256 in the index,
    training records it per key (train_keys.json), the check compares it with the benchmark's shards."""
    import shutil

    from mosear.evaluate.benchmark_files import load_benchmark
    from mosear.evaluate.config import BenchmarkSpec
    from mosear.evaluate.protocol import OverlapError
    from mosear.shards.config import ShardConfig
    from mosear.shards.reader import list_shards
    from mosear.shards.run import run_shard
    from mosear.train.keys import read_train_keys
    from mosear.train.preflight import source_digests

    clips = sorted((samples_dir / "ravdess").glob("*.mp4"))[:3]
    for folder, names in (("a", ["x1", "x2", "x3"]), ("b", ["other1", "other2", "fresh"])):
        (tmp_path / folder).mkdir()
        for i, (name, src) in enumerate(zip(names, clips)):
            shutil.copy(clips[2 - i] if name == "fresh" else src, tmp_path / folder / f"{name}.mp4")
    (tmp_path / "b" / "fresh.mp4").write_bytes((tmp_path / "b" / "fresh.mp4").read_bytes() + b"\0")  # other bytes
    for folder, ds in (("a", "corpusA"), ("b", "corpusB")):
        run_shard(load_config(ShardConfig, overrides={
            "sources": [{"adapter": "generic", "root": str(tmp_path / folder), "dataset": ds, "split": "train"}],
            "output": str(tmp_path / f"shards_{folder}"), "num_frames": 2, "height": 16, "width": 16,
            "progress": False, "workers": 1, "missing_audio": "silence"}))
    shards_a = [str(t) for t in list_shards(tmp_path / "shards_a")]
    keys = ["corpusA__x1", "corpusA__x2"]  # trained on two of the three
    ck = tmp_path / "ck" / "adapter"
    ck.mkdir(parents=True)
    write_train_keys(ck, keys, "test", source_digests(shards_a, keys))
    assert len(read_train_keys(ck).sources) == 2
    bench_dir = tmp_path / "bench" / "test"
    bench_dir.mkdir(parents=True)
    rows = {f"corpusB__{n}": {"label": "happy", "reason": "r"} for n in ("other1", "other2", "fresh")}
    for i, s in enumerate(("video_aligned", "audio_aligned", "consistent")):
        (bench_dir / f"{s}.json").write_text(json.dumps(dict([list(rows.items())[i]])))
    bench = load_benchmark(BenchmarkSpec(name="b", format="mined", path=str(tmp_path / "bench"),
                                         shards=str(tmp_path / "shards_b")))
    with pytest.raises(OverlapError, match=r"trained on 2 of the 3 evaluated items of benchmark b .*\(2 by the clip's bytes\)"):
        _overlap(ck, {"b": bench})
