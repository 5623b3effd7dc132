"""The fault suite at the pipeline level (``mosear run``, embedded, Prefect's temporary server).

1. Content identity, table-driven: after a complete run, one upstream input is changed *in place*
   (same file name, other bytes) and the pipeline run again; exactly the outputs that depend on it
   are recomputed, nothing else: the issue's scenario (a user re-downloads a damaged clip) first.
2. Failure policy: a mining shard that fails inside ``mosear run`` fails the run (exit 1, the count and
   the shard named), is not cached, fails again while the cause is there, and completes once it is
   removed, without redoing the shard stage.

Small settings throughout (4 frames of 64x64, 2 training steps, one evaluation setting). SIGKILL
resumes are tested per stage beside each stage (tests/shards/test_shard_resume.py,
tests/mine/test_bad_input.py, tests/train/test_recipe.py, tests/evaluate/test_fanout.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mosear.orchestrate.workdir import METHODS  # train runs once per method
from mosear.orchestrate.registry import stage_available


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(stage_available(s) for s in ("shard", "mine", "train", "eval")), reason="needs all stages"),
]


SMALL = {
    "shard": {"num_frames": 4, "height": 64, "width": 64, "workers": 2},
    "mine": {"crossfit": {"n_folds": 2}},
    "train": {"max_steps": 2, "checkpoint_every": 2, "warmup_steps": 1},
    "eval": {"settings": [{"name": "ar_off"}], "max_new_tokens": 4, "report": False},
}


def _run(corpus: Path, work: Path, stages=("shard", "mine", "train", "eval"), overrides=None) -> dict:
    from mosear.orchestrate.cli import load_pipeline_flow

    state = load_pipeline_flow()(corpus=str(corpus / "corpus.yaml"), workdir=str(work), stages=list(stages),
                                 overrides=overrides or SMALL, return_state=True)
    assert state.is_completed(), state
    return state.result()


def _train_runs(work: Path) -> set[str]:
    """The Ray Train run folders of every method (``train/<method>/ray/<run>``)."""
    return {f"{m}/{p.name}" for m in METHODS for p in (work / "train" / m / "ray").iterdir() if p.is_dir()}


def _tar_digests(folder: Path) -> dict[str, str]:
    return {p.name: json.loads(p.read_text())["tar_sha256"] for p in sorted(folder.glob("*.stats.json"))}


def _shards_holding(folder: Path, needle: str) -> set[str]:
    """Names of the committed shards in ``folder`` whose index lists a sample made from ``needle``."""
    out = set()
    for index in folder.glob("*.index.parquet"):
        rows = pq.read_table(index, columns=["key", "source"]).to_pylist()
        if any(needle in (r["source"] or "") or needle in r["key"] for r in rows):
            out.add(index.name[: -len(".index.parquet")])
    return out


def _replace_clip(corpus: Path) -> tuple[set[str], set[str]]:
    """A RAVDESS clip replaced by another take's bytes under its own name (as a re-download would)."""
    clips = sorted((corpus / "ravdess").glob("*.mp4"))
    shutil.copyfile(clips[1], clips[0])
    take = "-".join(clips[0].stem.split("-")[2:])
    return {clips[0].stem}, {"_f" + take}  # its natural sample, and the splices that use it as the face


def _replace_voice(corpus: Path, spliced: Path) -> tuple[set[str], set[str]]:
    """A voice take that a splice uses, replaced by another take's bytes under its own name."""
    voices = sorted((corpus / "ravdess_audio").glob("*.flac"))
    used = [v for v in voices if _shards_holding(spliced, "_v" + "-".join(v.stem.split("-")[2:]))]
    victim = used[0]
    other = next(v for v in voices if v != victim)
    shutil.copyfile(other, victim)
    return set(), {"_v" + "-".join(victim.stem.split("-")[2:])}


def _edit_benchmark(mined: Path) -> tuple[set[str], set[str]]:
    """A file of the mined test split (what eval reads by default) changed in place: one reference text
    edited, or, where these small settings leave the split's subset files empty, the file's bytes."""
    files = [mined / "test" / f"{s}.json" for s in ("video_aligned", "audio_aligned", "consistent")]
    path = next((p for p in files if json.loads(p.read_text())), files[0])
    data = json.loads(path.read_text())
    if data:
        key = sorted(data)[0]
        data[key]["reason"] = "edited by hand: " + str(data[key].get("reason"))
    before = path.read_bytes()
    path.write_text(json.dumps(data, indent=3))
    assert path.read_bytes() != before
    return set(), set()


def test_changed_input_recomputes_exactly_what_depends_on_it(samples_dir, tmp_path):
    corpus, work = tmp_path / "corpus", tmp_path / "w"
    shutil.copytree(samples_dir, corpus)
    # the sample corpus with 6 face/voice splices (a shard source): one natural, one spliced shard
    text = (corpus / "corpus_splices.yaml").read_text().replace("max_pairs: null", "max_pairs: 6")
    (corpus / "corpus.yaml").write_text(text)
    first = _run(corpus, work)
    assert not any(first["cached"].values())
    again = _run(corpus, work)  # nothing changed: every stage served from its cache, its marker intact
    assert all(again["cached"].values()), again["cached"]

    cases = [
        # (what changes, mutate -> (natural clip names, spliced-key fragments), stages expected to run)
        ("a corpus clip (the issue's scenario)", lambda: _replace_clip(corpus), {"shard", "mine", "train", "eval"}),
        ("a voice take used by a splice", lambda: _replace_voice(corpus, work / "shards"),
         {"shard", "mine", "train", "eval"}),
        ("a file of the mined benchmark", lambda: _edit_benchmark(work / "mined"), {"eval"}),
    ]
    for what, mutate, expect_ran in cases:
        shards_before = _tar_digests(work / "shards")
        evidence = {p.name: p.stat().st_mtime_ns for p in (work / "mined" / "evidence").glob("*.stats.json")}
        runs_before = _train_runs(work)
        clip_names, spliced_keys = mutate()
        natural = set().union(*[_shards_holding(work / "shards", n) for n in clip_names]) if clip_names else set()
        spliced = set().union(*[_shards_holding(work / "shards", k) for k in spliced_keys]) if spliced_keys else set()
        res = _run(corpus, work)
        ran = {s.split(":")[0] for s, c in res["cached"].items() if not c}  # train:lora, train:mose -> train
        assert ran == expect_ran, (what, res["cached"])
        assert all(not c for s, c in res["cached"].items() if s.split(":")[0] in expect_ran), (what, res["cached"])
        # shards: exactly the shards holding the clip (natural, or spliced from it) were rebuilt
        shards_after = _tar_digests(work / "shards")
        changed = {n for n in shards_after if shards_after[n] != shards_before.get(n)}
        assert changed == {f"{n}.stats.json" for n in natural | spliced}, what
        # mining: exactly the shards whose content changed were mined again, the others' evidence is untouched
        redone = {n for n, t in evidence.items() if (work / "mined" / "evidence" / n).stat().st_mtime_ns != t}
        assert redone == {f"{n}.stats.json" for n in natural | spliced}, what
        if "mine" in expect_ran:
            assert res["outcomes"]["mine"].summary["shards_mined"] == len(natural | spliced)
        # training: a new run from step 0 (never the old adapter re-exported), the old run kept
        runs_after = _train_runs(work)
        if "train" in expect_ran:  # one new run per method
            assert len(runs_after - runs_before) == len(METHODS) and runs_before <= runs_after, what
            for m in METHODS:
                assert res["outcomes"][f"train:{m}"].summary["resumed_from_step"] == 0
        else:
            assert runs_after == runs_before, what
        # evaluation: its unit was computed again (new benchmark content and a new adapter)
        run = json.loads((work / "reports" / "run.json").read_text())
        assert len(run["computed"]) == len(METHODS) and not run["cached"], what  # one unit per checkpoint
        for folder in ["shards", "mined", *(f"train/{m}" for m in METHODS), "reports"]:
            marker = json.loads((work / folder / "commit.json").read_text())
            assert marker["status"] == "complete", (what, folder)


FAULTY = '''
from mosear.mine.stage import MiningStage
from pathlib import Path


class BreaksShardIf(MiningStage):
    """A buggy plugin: while the flag file exists it forgets its declared field on one sample, which
    fails that sample's whole shard (a stage contract error)."""

    name = "breaks_shard_if"
    adds = ("checked",)

    def __init__(self, flag: str, key: str):
        self.flag, self.key = flag, key

    def process(self, sample):
        if not (sample["key"] == self.key and Path(self.flag).exists()):
            sample["checked"] = True
        return sample
'''


def test_failed_shard_fails_mosear_run_is_not_cached_and_reruns_after_the_fix(samples_dir, tmp_path, capsys):
    from mosear.cli import main
    from mosear.config import load_config
    from mosear.mine.config import DEFAULT_STAGES
    from mosear.shards.config import ShardConfig
    from mosear.shards.plan import plan_corpus

    pkg = tmp_path / "faulty_stage"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FAULTY)
    flag = tmp_path / "cause"
    flag.write_text("present")
    corpus = samples_dir / "corpus.yaml"
    plan = plan_corpus(load_config(ShardConfig, overrides={"corpus": str(corpus), "output": str(tmp_path / "x")}))
    shard, clip = next((s, c) for s in plan.shards for c in s.clips if c["dataset"] == "ravdess")
    victim = f"{clip['dataset']}__{clip['clip_id']}"
    stages = json.dumps(DEFAULT_STAGES + [{"stage": "faulty_stage:BreaksShardIf",
                                           "params": {"flag": str(flag), "key": victim}}])
    args = ["run", "--corpus", str(corpus), "--workdir", str(tmp_path / "w"), "--stages", "shard,mine",
            "shard.num_frames=4", "shard.height=64", "shard.width=64",
            "mine.crossfit.n_folds=2", f"mine.py_modules=[{pkg}]", f"mine.stages={stages}"]
    for attempt in (1, 2):  # the failure is not cached: the second run mines again and fails again
        assert main(args) == 1, attempt
        err = capsys.readouterr().err
        assert f"1 of {len(plan.shards)} failed (first: {shard.name}: " in err, err[-3000:]
        assert "StageContractError" in err
        assert not (tmp_path / "w" / "mined" / "commit.json").exists()
    flag.unlink()  # the cause is removed: the same command completes; the shard stage is not redone
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "shard 0.0 s (cached)" in out and "mine " in out and "mine 0.0 s (cached)" not in out
    assert json.loads((tmp_path / "w" / "mined" / "commit.json").read_text())["status"] == "complete"
