"""Bad input: damaged shards, silent audio, black frames, a stage that raises, a killed job."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mosear.config import load_config
from mosear.mine.config import DEFAULT_STAGES, MineConfig

FAULTY_STAGE = '''
from mosear.mine.stage import MiningStage


class RaisesOn(MiningStage):
    """Reproduces a stage bug that hits one sample only."""

    name = "raises_on"
    adds = ("checked",)

    def __init__(self, key: str):
        self.key = key

    def process(self, sample):
        if sample["key"] == self.key:
            raise RuntimeError("boom on " + self.key)
        sample["checked"] = True
        return sample
'''


def _copy_shard(src: Path, dst_dir: Path, name: str, drop_member: str | None = None) -> None:
    """Copy a committed shard under a new name, optionally leaving one tar member out."""
    base = src.name[: -len(".tar")]
    with tarfile.open(src) as tin, tarfile.open(dst_dir / f"{name}.tar", "w") as tout:
        for m in tin.getmembers():
            if m.name == drop_member:
                continue
            tout.addfile(m, io.BytesIO(tin.extractfile(m).read()))
    stats = json.loads((src.parent / f"{base}.stats.json").read_text())
    # the marker records the bytes of the tar as written (a consumer checks them on first read)
    stats["tar_sha256"] = hashlib.sha256((dst_dir / f"{name}.tar").read_bytes()).hexdigest()
    (dst_dir / f"{name}.stats.json").write_text(json.dumps(stats))


@pytest.fixture(scope="module")
def bad_corpus(sample_shards, tmp_path_factory):
    """A shard folder with: a shard missing one sample's wav; a shard of black-frame, silent and
    empty-audio samples (written by the shard writer); an unreadable (corrupt) committed shard."""
    from mosear.shards.reader import iter_samples, list_shards
    from mosear.shards.writer import ShardSample, ShardWriter

    root = tmp_path_factory.mktemp("bad")
    d = root / "shards"
    d.mkdir()
    shards = list_shards(sample_shards)
    first = next(iter_samples(shards[:1]))
    _copy_shard(shards[0], d, "train-000000", drop_member=f"{first['key']}.wav")
    real = list(iter_samples(shards[2:3]))[:3]
    with ShardWriter(d, "train", 1, "bad") as w:
        for s, kind in zip(real, ("black", "silent", "empty")):
            frames = np.zeros_like(s["frames"]) if kind == "black" else s["frames"]
            audio = {"black": s["audio"], "silent": np.zeros_like(s["audio"]), "empty": np.zeros(0, np.float32)}[kind]
            meta = dict(s["meta"], key=f"{kind}__clip", has_audio=kind != "silent")
            w.write(ShardSample(f"{kind}__clip", frames, audio, 16000, meta))
    (d / "train-000002.tar").write_bytes(b"\x00garbage" * 100)
    (d / "train-000002.stats.json").write_text(json.dumps({"config_hash": "x", "split": "train"}))
    pkg = root / "faulty_stages"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FAULTY_STAGE)
    return d, pkg, first["key"], real[1]["key"]


@pytest.mark.slow
def test_bad_inputs_are_recorded_and_a_failed_shard_fails_the_stage(bad_corpus, tmp_path, ray_local):
    """Bad samples are dropped with reasons; an unreadable shard fails the stage (count, first reason,
    nothing assembled, no marker) unless allow_partial, which assembles the rest and says what is missing."""
    from mosear.identity import read_marker
    from mosear.mine.run import run_mine
    from mosear.orchestrate.errors import StageFailedError, exit_code

    shards, pkg, missing_key, _ = bad_corpus
    raise_key = "black__clip"
    values = {
        "shards": str(shards), "output": str(tmp_path / "mined"), "workers": 1, "progress": False,
        "py_modules": [str(pkg)], "crossfit": {"n_folds": 2},
        "stages": DEFAULT_STAGES,
    }
    out = tmp_path / "mined"
    with pytest.raises(StageFailedError, match=r"1 of 3 failed \(first: train-000002: ") as info:
        run_mine(load_config(MineConfig, None, values))
    assert exit_code(info.value) == 1 and list(info.value.reasons) == ["train-000002"]
    assert not (out / "conflicts.parquet").exists() and read_marker(out) is None  # nothing passes for complete
    assert len(list((out / "evidence").glob("*.stats.json"))) == 3  # the good shards' evidence is kept

    res = run_mine(load_config(MineConfig, None, {**values, "allow_partial": True}))
    marker = read_marker(out)
    assert marker["status"] == "partial" and marker["missing"] == ["train-000002"]
    assert res.failed.keys() == {"train-000002"} and res.summary["missing_shards"] == ["train-000002"]
    df = pd.read_parquet(out / "conflicts.parquet")
    dropped = pd.read_parquet(out / "dropped.parquet").set_index("key")
    assert dropped.loc[missing_key, "reason"] == "missing_member" and "wav" in dropped.loc[missing_key, "detail"]
    rows = df.set_index("key")
    assert rows.loc[raise_key, "face_found"] == False  # noqa: E712  black frames: no face, kept
    assert pd.isna(rows.loc[raise_key, "visual_pred"]) and rows.loc[raise_key, "subset"] == "ambiguous"
    assert rows.loc["empty__clip", "audio_silent"] and pd.isna(rows.loc["empty__clip", "audio_pred"])
    s = res.summary
    assert s["samples_in"] == len(df) + len(dropped) == 9 + 2
    assert [f["shard"] for f in s["shards"]["failed"]] == ["train-000002"]
    assert "ReadError" in s["shards"]["failed"][0]["error"] or "tar" in s["shards"]["failed"][0]["error"].lower()
    assert s["dropped_by_stage_reason"] == {"signal_quality:missing_member": 1}
    stage = {st["name"]: st for st in s["stage_stats"]}
    assert stage["signal_quality"]["dropped"] == {"missing_member": 1}


def test_a_stage_that_raises_fails_its_shard_not_the_sample(bad_corpus, tmp_path, ray_local):
    """Catches: a stage's exception on one sample turned into ``Drop("error")`` and the shard committed
    (mutation: the ``raise StageRaisedError`` in ``StagePipeline.run_batch`` back to ``Drop``): the buggy
    stage's output would be cached and a rerun after the fix would not mine that shard again."""
    from mosear.identity import read_marker
    from mosear.mine.run import evidence_hash, run_mine
    from mosear.mine.worker import is_done
    from mosear.orchestrate.errors import StageFailedError

    shards, pkg, _, _ = bad_corpus
    values = {
        "shards": str(shards), "output": str(tmp_path / "mined"), "workers": 1, "progress": False,
        "py_modules": [str(pkg)], "crossfit": {"n_folds": 2},
        "stages": DEFAULT_STAGES + [{"stage": "faulty_stages:RaisesOn", "params": {"key": "silent__clip"}}],
    }
    cfg = load_config(MineConfig, None, values)
    with pytest.raises(StageFailedError) as info:
        run_mine(cfg)
    failed = info.value.reasons
    bad = [k for k, v in failed.items() if "boom on silent__clip" in v]
    assert len(bad) == 1 and "stage raises_on raised on sample silent__clip" in failed[bad[0]]
    assert not is_done(cfg.output, shards / f"{bad[0]}.tar", evidence_hash(cfg))  # never cached
    assert read_marker(cfg.output) is None
    audits = [pd.read_parquet(p) for p in (tmp_path / "mined" / "evidence").glob("*.audit.parquet")]
    assert all("error" not in set(a["reason"]) for a in audits if len(a))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["first shard committed", "assembling"])
def test_killed_job_resumes_without_redoing_finished_shards(sample_shards, tmp_path, repo_root, point):
    """SIGKILL a real `mosear mine` process (and its embedded Ray) after its first shard commits, or while
    it assembles (dropped.parquet written, commit.json not yet): the rerun redoes no committed shard and
    its tables equal an uninterrupted run's."""
    from mosear.identity import read_marker
    from mosear.mine.run import run_mine

    shards = tmp_path / "shards"
    shards.mkdir()
    for p in sorted(sample_shards.glob("train-*")):
        shutil.copy(p, shards / p.name)
    out = tmp_path / "mined"
    args = [sys.executable, "-m", "mosear.cli", "mine", f"shards={shards}", f"output={out}", "workers=1",
            "batch_size=2", "progress=false"]
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    proc = subprocess.Popen(args, cwd=repo_root, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        reached = ((lambda: list((out / "evidence").glob("*.stats.json"))) if point == "first shard committed"
                   else (lambda: (out / "dropped.parquet").exists()))
        while time.time() < deadline and not reached():
            assert proc.poll() is None, "the mining job ended before it could be killed"
            time.sleep(0.01)
        done_before = sorted(p.name for p in (out / "evidence").glob("*.stats.json"))
        assert done_before, "no shard committed within the time limit"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job's own process group: driver + its Ray
        proc.wait()
    assert read_marker(out) is None, "the job finished before it could be killed"
    assert len(done_before) < 3 or point == "assembling"
    mtimes = {n: (out / "evidence" / n).stat().st_mtime_ns for n in done_before}
    cfg = load_config(MineConfig, None, {"shards": str(shards), "output": str(out), "workers": 1,
                                         "progress": False, "batch_size": 2})
    res = run_mine(cfg)
    assert res.shards_skipped >= len(done_before) and res.shards_mined + res.shards_skipped == 5
    for n, t in mtimes.items():  # finished shards were not redone
        assert (out / "evidence" / n).stat().st_mtime_ns == t
    df = pd.read_parquet(out / "conflicts.parquet")
    assert df["key"].is_unique and len(df) == 33
    assert read_marker(out)["status"] == "complete"
    ref = run_mine(cfg.model_copy(update={"output": str(tmp_path / "ref")}))
    assert ref.shards_mined == 5
    cols = ["key", "label", "subset", "audio_pred", "visual_pred", "margin"]
    ref_df = pd.read_parquet(tmp_path / "ref" / "conflicts.parquet")
    pd.testing.assert_frame_equal(df[cols].sort_values("key").reset_index(drop=True),
                                  ref_df[cols].sort_values("key").reset_index(drop=True))
