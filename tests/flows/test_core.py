"""Cache keys, content hashing, failure classification, pipeline wiring: no Prefect server, no Ray."""

from __future__ import annotations

import os
import time
import shutil
from pathlib import Path

import pytest

from mosear.config import ConfigError
from mosear.orchestrate.errors import BadInputError, TransientStageError, is_transient, is_transient_name, last_exception_line
from mosear.identity import DigestMemo as HashMemo
from mosear.identity import digest_paths as hash_paths
from mosear.orchestrate.workdir import STAGE_ORDER, pipeline_requests
from mosear.orchestrate.ray_jobs import absolutize_paths
from mosear.orchestrate.dispatch import StageRequest, cache_key


# -- content hashes ----------------------------------------------------------------------------------
def _tree(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.bin").write_bytes(b"x" * 3000)
    (root / "y.txt").write_text("hello")
    return root


def test_hash_follows_content_not_mtime(tmp_path):
    root = _tree(tmp_path / "t")
    h0 = hash_paths([root])
    os.utime(root / "y.txt", (1, 1))  # touched: same bytes
    assert hash_paths([root]) == h0
    (root / "y.txt").write_text("hellO")
    h1 = hash_paths([root])
    assert h1 != h0
    (root / "y.txt").rename(root / "z.txt")
    assert hash_paths([root]) not in (h0, h1)


@pytest.mark.parametrize("name", [".hidden", "part.tmp", "_tmp_shard.tar", "w.partial", "run.json", "commit.json",
                                  "x.stats.json", ".x.tar.tmp-1-ab"])
def test_hash_ignores_temporaries(tmp_path, name):
    root = _tree(tmp_path / "t")
    h0 = hash_paths([root])
    (root / name).write_text("half-written")
    assert hash_paths([root]) == h0


def test_hash_missing_path_differs_from_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    assert hash_paths([tmp_path / "nope"]) != hash_paths([tmp_path / "empty"])


def test_memo_reuses_hash_until_file_changes(tmp_path):
    root = _tree(tmp_path / "t")
    memo_path = tmp_path / "memo.json"
    h0 = hash_paths([root], HashMemo(memo_path))
    assert memo_path.is_file()
    # A memo entry with the file's size and mtime is trusted: prove it by planting a wrong digest.
    memo = HashMemo(memo_path)
    key = str((root / "y.txt").resolve())
    memo._data[key][-1] = "0" * 64
    assert hash_paths([root], memo) != h0
    # Changing the file (size/mtime) invalidates the entry: the real content hash comes back.
    (root / "y.txt").write_text("hello")
    st = (root / "y.txt").stat()
    os.utime(root / "y.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert hash_paths([root], memo) == h0


# -- failure classification ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc, transient",
    [
        (ConnectionError("reset"), True),
        (TimeoutError(), True),
        (TransientStageError("job stopped"), True),
        (BadInputError("bad"), False),
        (ConfigError("num_frames: must be >= 1"), False),
        (FileNotFoundError("corpus"), False),
        (ValueError("broken file"), False),
        (KeyError("label"), False),
    ],
)
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def test_ray_errors_are_transient():
    import ray.exceptions as rex

    assert is_transient(rex.WorkerCrashedError())
    assert is_transient(rex.NodeDiedError("n"))
    assert is_transient_name("ray.exceptions.ActorDiedError")
    assert not is_transient_name("ValueError")


def test_last_exception_line():
    log = "\n".join([
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ray.exceptions.RayTaskError(ValueError): ray::f() (pid=1)",
        "mosear.config.ConfigError: corpus root /x is not a folder",
    ])
    assert last_exception_line(log) == ("mosear.config.ConfigError", "corpus root /x is not a folder")
    assert last_exception_line("all good\n") is None


# -- wiring and cache keys ----------------------------------------------------------------------------
def test_pipeline_wiring(tmp_path, samples_dir):
    reqs = pipeline_requests(str(samples_dir / "corpus.yaml"), str(tmp_path / "w"), overrides={"train": {"max_steps": 30}})
    # the train stage runs once per method: the LoRA baseline and MoSE, each into its own folder
    assert [r.label or r.stage for r in reqs] == ["shard", "mine", "train:lora", "train:mose", "eval"]
    by = {r.label or r.stage: r.overrides for r in reqs}
    w = (tmp_path / "w").resolve()
    assert by["shard"]["output"] == str(w / "shards")
    assert by["mine"]["shards"] == str(w / "shards")
    for m in ("lora", "mose"):
        t = by[f"train:{m}"]
        assert t["shards"] == [str(w / "shards")] and t["max_steps"] == 30
        assert t["mix"] == str(w / "mined" / "train_mix.parquet")  # train rows only (mine writes it so)
        assert t["output"] == str(w / "train" / m) and t["model"]["adapter"] == m
    # evaluation: both checkpoints on the test split, AR calibrated on validation for both, four methods first
    ev = by["eval"]
    assert ev["checkpoints"] == [f"lora={w / 'train' / 'lora' / 'adapter'}", f"mose={w / 'train' / 'mose' / 'adapter'}"]
    assert ev["benchmarks"][0]["split"] == "test"
    assert {"name": "ar_calibrated", "ar": True, "calibrate": True} in ev["settings"]
    assert ev["methods"] == {"LoRA": "lora/ar_off", "LoRA+AR": "lora/ar_calibrated", "MoSE": "mose/ar_off",
                             "MoSE+AR": "mose/ar_calibrated"}
    from mosear.orchestrate.dispatch import prepare_all

    prepare_all(reqs)  # every section is a valid config
    # splices are a shard source (the corpus declares them): mining only mines, and train and eval name the
    # shard folder they read (natural and spliced clips alike)
    assert "splice" not in by["mine"] and ev["benchmarks"][0]["shards"] == str(w / "shards")
    assert {r.cache_dir for r in reqs} == {str(w / ".mosear-cache")}
    with pytest.raises(ValueError, match="unknown stage"):
        pipeline_requests("c.yaml", "w", stages=["shard", "ship"])


def test_cache_key_tracks_config_and_input_content(tmp_path, samples_dir):
    corpus = tmp_path / "samples"
    shutil.copytree(samples_dir, corpus, ignore=shutil.ignore_patterns("ravdess_audio"))
    req = StageRequest(stage="shard", overrides={"corpus": str(corpus / "corpus.yaml"), "output": str(tmp_path / "o")})
    k0 = cache_key(req)
    assert k0.startswith("shard-") and cache_key(req) == k0
    # scheduling-only fields do not change the key; output-changing ones do
    assert cache_key(req.model_copy(update={"overrides": {**req.overrides, "workers": 2}})) == k0
    assert cache_key(req.model_copy(update={"overrides": {**req.overrides, "num_frames": 3}})) != k0
    # so does any change to a clip of the corpus
    clip = next((corpus / "ravdess").iterdir())
    clip.write_bytes(clip.read_bytes() + b"\0")
    assert cache_key(req) != k0


def test_memo_is_keyed_by_inode_too(tmp_path):
    """A file replaced by another with the same size and mtime (a copy with ``cp -p``) is read again."""
    root = _tree(tmp_path / "t")
    memo = HashMemo(tmp_path / "memo.json")
    h0 = hash_paths([root], memo)
    y = root / "y.txt"
    st = y.stat()
    other = tmp_path / "other.txt"
    other.write_text("jello")  # same size
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    other.replace(y)  # same name, same size, same mtime, other bytes (and inode)
    assert y.stat().st_mtime_ns == st.st_mtime_ns and y.stat().st_size == st.st_size
    assert hash_paths([root], memo) != h0


def test_memo_sees_an_in_place_rewrite_that_restores_the_mtime(tmp_path):
    """Same inode, same size, mtime set back (``cp -p`` over an existing file): ctime still moved."""
    root = _tree(tmp_path / "t")
    memo = HashMemo(tmp_path / "memo.json")
    h0 = hash_paths([root], memo)
    y = root / "y.txt"
    st = y.stat()
    time.sleep(0.01)
    with open(y, "r+") as fh:  # rewrite in place: the inode stays
        fh.write("jello"[: st.st_size])
    os.utime(y, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (y.stat().st_ino, y.stat().st_size, y.stat().st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert hash_paths([root], memo) != h0


def test_cache_key_ignores_scheduling_fields_declared_on_them(tmp_path, samples_dir):
    """Every stage: a field marked SCHEDULING changes nothing, an output field changes the key."""
    from mosear.config import affects_output
    from mosear.orchestrate.registry import STAGES

    for spec in STAGES.values():
        fields = spec.config_cls().model_fields
        assert any(not affects_output(f) for f in fields.values()), spec.name
    req = StageRequest(stage="mine", overrides={"shards": str(tmp_path), "output": str(tmp_path / "m")})
    k0 = cache_key(req)
    assert cache_key(req.model_copy(update={"overrides": {**req.overrides, "workers": 3, "progress": False}})) == k0
    assert cache_key(req.model_copy(update={"overrides": {**req.overrides, "margin": 0.3}})) != k0


@pytest.mark.parametrize("exc, code", [
    ("StageFailedError", 1), (ConfigError("bad"), 2), (FileNotFoundError("x"), 2), (ValueError("x"), 2),
    ("OutputConflictError", 3), ("CheckpointMismatchError", 3), (ConnectionError("x"), 75),
    (TransientStageError("lost"), 75), (KeyboardInterrupt(), 130),
])
def test_exit_code_classes(exc, code):
    from mosear.orchestrate.errors import StageFailedError, error_for_exit_code, exit_code

    if exc == "StageFailedError":
        exc = StageFailedError("mosear mine", 1, 3, {"train-000001": "ValueError: boom"})
        assert "1 of 3 failed" in str(exc) and "train-000001: ValueError: boom" in str(exc)
    elif exc == "OutputConflictError":
        from mosear.shards.run import OutputConflictError

        exc = OutputConflictError("other config")
    elif exc == "CheckpointMismatchError":
        from mosear.train.state import CheckpointMismatchError

        exc = CheckpointMismatchError("other model")
    assert exit_code(exc) == code
    # a cluster job that died before writing its result file: its exit code maps back to the same class
    back = error_for_exit_code(code, "msg")
    assert exit_code(back) == code
    assert is_transient(back) is (code == 75)  # 130 is never retried
    assert isinstance(back, BadInputError) is (code in (2, 3))


@pytest.mark.parametrize("exc", [
    "StageFailedError", ConfigError("bad"), ValueError("x"), "OutputConflictError", ConnectionError("x"),
    TransientStageError("lost"), KeyboardInterrupt(),
])
def test_exit_code_round_trips_through_the_result_record(exc, tmp_path):
    """A cluster job's verdict file (written by ``mosear --result-file``) gives back the class the
    embedded run raised. Catches: failed units read back as bad input (exit 2), 130 read back as
    transient (retried, exit 75), the counts and reasons lost on the way."""
    import json

    from mosear.orchestrate.errors import StageFailedError, error_from_result, exit_code, result_record

    if exc == "StageFailedError":
        exc = StageFailedError("mosear mine", 2, 5, {"train-000001": "ValueError: boom", "train-000002": "KeyError: k"})
    elif exc == "OutputConflictError":
        from mosear.shards.run import OutputConflictError

        exc = OutputConflictError("other config")
    code = exit_code(exc)
    rec = json.loads(json.dumps(result_record(code, exc)))  # through the file's JSON
    back = error_from_result(rec, "mosear mine (Ray job x)")
    assert exit_code(back) == code and is_transient(back) is is_transient(exc)
    if code == 1:
        assert (back.count, back.total) == (2, 5) and "train-000002: KeyError: k" in str(back)
    assert error_from_result(result_record(0), "x") is None


def test_cli_writes_its_verdict_to_the_result_file(tmp_path):
    """``python -m mosear.cli --result-file F <stage> ...`` (a cluster job's entrypoint) leaves its class
    and message in F, and prints one line without a traceback. Catches: the file not written on a
    failure, a traceback printed without --debug."""
    import json
    import subprocess
    import sys

    out = tmp_path / "jobs" / "r.json"
    p = subprocess.run([sys.executable, "-m", "mosear.cli", "--result-file", str(out), "shard",
                        f"corpus={tmp_path / 'none.yaml'}", f"output={tmp_path / 's'}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    rec = json.loads(out.read_text())
    assert rec["class"] == "bad_input" and rec["code"] == 2 and "none.yaml" in rec["message"]
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_cache_key_rejects_bad_config(tmp_path):
    req = StageRequest(stage="shard", overrides={"corpus": str(tmp_path / "none.yaml")})
    with pytest.raises(BadInputError, match=r"(?s)mosear shard: bad config: .*does not exist"):
        cache_key(req)


def test_absolutize_paths_for_cluster_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = {"corpus": "c.yaml", "output": "s3://b/out", "sources": [{"root": "r"}], "splice": {"faces": "f"},
           "checkpoints": ["base", "ck", "lora=runs/lora/adapter", "mose=/abs/mose/adapter", "endpoint"],
           "num_frames": 4}
    out = absolutize_paths(raw, ("corpus", "output", "sources[].base_dir!", "splice.faces", "checkpoints"))
    assert out["corpus"] == str(tmp_path / "c.yaml")
    assert out["output"] == "s3://b/out"  # object storage stays as it is
    assert out["sources"][0] == {"root": "r", "base_dir": str(tmp_path)}  # root stays relative to base_dir
    assert out["splice"]["faces"] == str(tmp_path / "f")
    # named checkpoints keep their names (issue 24: "lora=..." became one absolute path, the names lost)
    assert out["checkpoints"] == ["base", str(tmp_path / "ck"), f"lora={tmp_path}/runs/lora/adapter",
                                  "mose=/abs/mose/adapter", "endpoint"]
    assert raw["corpus"] == "c.yaml"  # the input is not modified


def test_pipeline_validates_every_stage_before_running(samples_dir, tmp_path):
    from mosear.orchestrate.errors import BadInputError
    from mosear.orchestrate.dispatch import prepare_all

    corpus = str(samples_dir / "corpus.yaml")
    prepare_all(pipeline_requests(corpus, str(tmp_path)))  # the defaults are valid
    with pytest.raises(BadInputError, match=r"(?s)mosear eval: bad config: .*batch_size"):
        prepare_all(pipeline_requests(corpus, str(tmp_path), overrides={"eval": {"batch_size": 0}}))


def test_everything_that_names_a_stage_derives_from_the_registry():
    """CLI commands, pipeline order, request type and flows come from the stage packages' specs."""
    import importlib

    from pydantic import ValidationError

    from mosear.cli import COMMANDS
    from mosear.config import StageConfig
    from mosear.orchestrate.flows import STAGE_FLOWS
    from mosear.orchestrate.registry import STAGES

    assert list(STAGES) == list(STAGE_ORDER) == ["shard", "mine", "train", "eval"]
    assert list(COMMANDS)[: len(STAGES)] == list(STAGES)  # `mosear --help` lists them in pipeline order
    for name, spec in STAGES.items():
        package = spec.cli.rsplit(".", 1)[0]  # mosear.shards: the stage's own package defines its spec
        assert importlib.import_module(f"{package}.spec").SPEC is spec
        assert COMMANDS[name] == (spec.cli, spec.help)
        assert callable(importlib.import_module(spec.cli).main)
        assert STAGE_FLOWS[name].name == f"mosear-{name}"
        assert issubclass(spec.config_cls(), StageConfig)
    with pytest.raises(ValidationError):
        StageRequest(stage="ship")


def test_a_request_is_validated_and_fingerprinted_once(tmp_path, samples_dir, monkeypatch):
    """prepare validates, fingerprint digests the inputs; the cache key, the task's key function and a
    second fingerprint reuse them (wrappers count the real functions' calls)."""
    import mosear.orchestrate.dispatch as dispatch
    from mosear.orchestrate.prefect_tasks import _task_cache_key

    calls = {"load_config": 0, "stage_identity": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(dispatch, "load_config", counted("load_config", dispatch.load_config))
    monkeypatch.setattr(dispatch, "stage_identity", counted("stage_identity", dispatch.stage_identity))
    req = StageRequest(stage="shard", overrides={"corpus": str(samples_dir / "corpus.yaml"), "output": str(tmp_path / "o")})
    prepared = dispatch.prepare(req)
    assert calls == {"load_config": 1, "stage_identity": 0}  # inputs are not digested before the stage's turn
    stage = prepared.fingerprint()
    assert stage.fingerprint() is stage and stage.config is prepared.config  # the validated object travels
    assert cache_key(stage) == _task_cache_key(None, {"stage": stage}) == stage.cache_key
    assert stage.cache_key.startswith("shard-") and stage.identity["stage"] == "shard"
    assert calls == {"load_config": 1, "stage_identity": 1}
