"""Person-disjoint splits (mosear/mine/splits.py) on rows built from the sample corpus's real file names
(RAVDESS actors 05, 01, 03, 06, 09, 10, 19, their audio-only takes and same-actor splices; CREMA-D 1001's
faces with 1002's voice), on random corpora (hypothesis) and on a many-speaker table."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mosear.mine.assemble import train_mix
from mosear.adapters.splice import plan_pairs
from mosear.mine.splits import SPLITS, UNASSIGNED, SplitConfig, assign_splits, split_warnings
from mosear.mine.subsets import SUBSETS

SUBS = ("consistent", "video_aligned", "audio_aligned", "ambiguous")


def sample_rows(samples_dir: Path) -> pd.DataFrame:
    """One row per clip the sample run mines: the RAVDESS faces, CREMA-D 1001's clips, every splice."""
    rows = []
    for i, p in enumerate(sorted((samples_dir / "ravdess").glob("*.mp4"))):
        take = "ravdess:" + "-".join(p.stem.split("-")[2:])
        spk = f"ravdess_{p.stem.split('-')[6]}"
        rows.append({"key": f"ravdess__{p.stem}", "speaker": spk, "face_person": spk, "voice_person": spk,
                     "face_take": take, "voice_take": take, "origin": "natural", "subset": SUBS[i % 4],
                     "transcript": "Kids are talking by the door"})
    for i, p in enumerate(sorted((samples_dir / "crema_d").glob("*.flv"))):
        rows.append({"key": f"crema_d__{p.stem}", "speaker": "crema_d_1001", "face_person": "crema_d_1001",
                     "voice_person": "crema_d_1001", "face_take": f"crema_d:{p.stem}",
                     "voice_take": f"crema_d:{p.stem}", "origin": "human-rated", "subset": SUBS[(i + 1) % 4],
                     "transcript": "Don't forget a jacket"})
    pairs = plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio") + \
        plan_pairs(samples_dir / "crema_d", samples_dir / "crema_d_voice", pairing="crema_d")
    for pair in pairs:
        rows.append({"key": pair.key, "speaker": pair.face.person, "face_person": pair.face.person,
                     "voice_person": pair.voice.person, "face_take": f"{pair.face.dataset}:{pair.face.take}",
                     "voice_take": f"{pair.voice.dataset}:{pair.voice.take}", "origin": "spliced",
                     "subset": "spliced", "transcript": None})
    return pd.DataFrame(rows)


def assert_person_disjoint(df: pd.DataFrame, splits: list[str]) -> None:
    """Walk every row: no person, as face or as voice, and no source take in two splits."""
    owner: dict[str, str] = {}
    for r, s in zip(df.to_dict("records"), splits):
        if s == UNASSIGNED:
            continue
        for k in (f"take:{r['face_take']}", f"take:{r['voice_take']}", f"person:{r['face_person']}",
                  f"person:{r['voice_person']}"):
            assert owner.setdefault(k, s) == s, f"{k} is in {owner[k]} and {s} ({r['key']})"


def test_sample_corpus_splits_by_person_with_unseen_test_and_validation_actors(samples_dir):
    """Catches: a person in two splits (as face in one, voice in another: the 1001-face x 1002-voice
    swaps), fewer than 2 test / 1 validation people, a splice left unassigned, splits that change with
    row order."""
    df = sample_rows(samples_dir)
    assert df["face_person"].nunique() == 8 and df["voice_person"].nunique() == 9  # 1002 only as a voice
    cfg = SplitConfig()
    res = assign_splits(df, cfg)
    assert res.grouping == "speaker" and not res.fallbacks and UNASSIGNED not in res.splits
    assert_person_disjoint(df, res.splits)
    assert len(res.people["test"]) >= 2 and len(res.people["validation"]) >= 1, res.people
    assert res.person_disjoint and not set(res.people["test"]) & set(res.people["train"])
    where = {p: s for s, ps in res.people.items() for p in ps}
    assert where["crema_d_1001"] == where["crema_d_1002"]  # tied by their swaps
    assert not [w for w in split_warnings(df, res, cfg, SUBSETS) if "person" in w], res.people
    assert assign_splits(df.sample(frac=1, random_state=3).sort_index(), cfg).splits == res.splits
    summary = res.summary(cfg)
    assert summary["people"] == res.people and summary["person_disjoint"] is True


def test_pinned_people_go_where_the_config_says_and_contradictions_are_errors(samples_dir):
    """Catches: splits.assign ignored, or a pin that would split a face from its swapped voice accepted."""
    df = sample_rows(samples_dir)
    cfg = SplitConfig(assign={"test": ["ravdess_09", "crema_d_1001"], "validation": ["ravdess_01"]})
    res = assign_splits(df, cfg)
    assert {"ravdess_09", "crema_d_1001", "crema_d_1002"} <= set(res.people["test"])
    assert "ravdess_01" in res.people["validation"]
    assert_person_disjoint(df, res.splits)
    with pytest.raises(ValueError, match=r"one group .* pinned to \['test', 'validation'\]"):
        assign_splits(df, SplitConfig(assign={"test": ["crema_d_1001"], "validation": ["crema_d_1002"]}))
    with pytest.raises(ValidationError, match="pinned to both test and validation"):
        SplitConfig(assign={"test": ["ravdess_09"], "validation": ["ravdess_09"]})
    ghost = assign_splits(df, SplitConfig(assign={"test": ["ravdess_99"]}))
    assert any("not in the corpus: ['ravdess_99']" in n for n in ghost.notes)


def test_one_actor_corpus_is_a_warning_with_counts_not_a_silent_split(samples_dir):
    """Catches: a one-person corpus reported as person-disjoint (its test actor is the training actor)."""
    df = sample_rows(samples_dir)
    df = df[(df["face_person"] == "ravdess_05") & (df["voice_person"] == "ravdess_05")].reset_index(drop=True)
    cfg = SplitConfig()
    res = assign_splits(df, cfg)
    assert res.grouping == "take" and [f["grouping"] for f in res.fallbacks] == ["speaker"]
    assert "1 speaker(s)" in res.fallbacks[0]["reason"] and "speaker-disjoint splits impossible" in res.fallbacks[0]["reason"]
    assert not res.person_disjoint and res.summary(cfg)["person_disjoint"] is False
    warnings = split_warnings(df, res, cfg, SUBSETS)
    assert any(w.startswith("splits: not person-disjoint: 1 of 1 person(s) in more than one split") for w in warnings), warnings
    assert_take_disjoint = {}
    for r, s in zip(df.to_dict("records"), res.splits):  # sources still never in two splits
        for k in (r["face_take"], r["voice_take"]):
            if s != UNASSIGNED:
                assert assert_take_disjoint.setdefault(k, s) == s


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 5), st.integers(0, 5),
                          st.sampled_from(SUBS)), min_size=1, max_size=60), st.integers(0, 3))
def test_random_corpora_never_put_a_person_in_two_splits(rows, seed):
    """Catches: a person (as face or as voice) or a source take in two splits, for any mix of natural
    clips and same- or cross-person splices (hypothesis draws face person, voice person, takes)."""
    recs = []
    for i, (fp, vp, ft, vt, sub) in enumerate(rows):
        recs.append({"key": f"d__{i}", "speaker": f"p{fp}", "face_person": f"p{fp}", "voice_person": f"p{vp}",
                     "face_take": f"d:p{fp}_{ft}", "voice_take": f"d:p{vp}_{vt}" if (fp, ft) != (vp, vt) else f"d:p{fp}_{ft}",
                     "origin": "natural" if (fp, ft) == (vp, vt) else "spliced", "subset": sub})
    df = pd.DataFrame(recs)
    res = assign_splits(df, SplitConfig(seed=seed))
    if res.grouping == "speaker":
        assert_person_disjoint(df, res.splits)
        assert UNASSIGNED not in res.splits
    assert assign_splits(df, SplitConfig(seed=seed)).splits == res.splits


def test_missing_speakers_and_takes_never_join_rows(samples_dir):
    """Rows without a speaker (the CREMA-D re-encodes of unknown id) are groups of their own, also when
    pandas holds the missing value as NaN: they must not all fall into one 'no speaker' group."""
    stems = [p.stem for p in sorted((samples_dir / "crema_d_extra").glob("*.mp4"))] + ["1001_DFA_ANG_XX"]
    df = pd.DataFrame([{"key": f"crema_d__{c}", "speaker": "crema_d_1001" if c[0].isdigit() else None,
                        "face_take": f"crema_d:{c}", "voice_take": f"crema_d:{c}", "origin": "natural",
                        "subset": SUBS[i % 4]} for i, c in enumerate(stems)])
    df = df.assign(speaker=pd.array([x if isinstance(x, str) else None for x in df["speaker"]], dtype="str"))
    assert df["speaker"].isna().sum() == 6
    res = assign_splits(df, SplitConfig(group_by=["speaker"], min_people={}))
    assert res.groups == 7 and len(set(res.splits)) == 3


def many_speakers(n_speakers: int = 12, per: int = 6) -> pd.DataFrame:
    rows = []
    for s, j in itertools.product(range(n_speakers), range(per)):
        rows.append({"key": f"d__s{s}_{j}", "speaker": f"spk{s}", "face_take": f"d:s{s}_{j}",
                     "voice_take": f"d:s{s}_{j}", "origin": "natural", "subset": SUBS[(s + j) % 3]})
    # splices within a speaker (face of take j, voice of take j+1)
    for s in range(n_speakers):
        rows.append({"key": f"d__splice_s{s}", "speaker": f"spk{s}", "face_take": f"d:s{s}_0",
                     "voice_take": f"d:s{s}_1", "origin": "spliced", "subset": "video_aligned"})
    return pd.DataFrame(rows)


def assert_disjoint(df: pd.DataFrame, splits: list[str], by_speaker: bool) -> None:
    """Walk every row: no source take (face or voice) and, if asked, no speaker of a row of one split
    occurs in a row of another split."""
    df = df.assign(split=splits)
    placed = df[df["split"] != UNASSIGNED]
    owner: dict[str, str] = {}
    for r in placed.to_dict("records"):
        keys = [f"take:{r['face_take']}", f"take:{r['voice_take']}"]
        if by_speaker and r["speaker"]:
            keys.append(f"speaker:{r['speaker']}")
        for k in keys:
            assert owner.setdefault(k, r["split"]) == r["split"], f"{k} is in {owner[k]} and {r['split']} ({r['key']})"


def test_many_speakers_are_split_by_speaker_and_stratified():
    df = many_speakers()
    res = assign_splits(df, SplitConfig())
    assert res.grouping == "speaker" and not res.fallbacks
    assert_disjoint(df, res.splits, by_speaker=True)
    assert UNASSIGNED not in res.splits  # within-speaker splices land with their speaker
    got = df.assign(split=res.splits)
    for s in SPLITS:  # every split holds every subset
        assert set(got.loc[got["split"] == s, "subset"]) == {"consistent", "video_aligned", "audio_aligned"}, s
    share = got["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.6, abs=0.1) and share["test"] == pytest.approx(0.2, abs=0.1)
    assert not split_warnings(df, res, SplitConfig(), SUBSETS)


def test_a_ratio_that_leaves_a_subset_or_split_empty_is_a_warning_with_counts():
    df = many_speakers()
    df.loc[0, "subset"] = "ambiguous"  # one ambiguous row: only one split can hold it
    cfg = SplitConfig(train=0.8, validation=0.0, test=0.2)
    res = assign_splits(df, cfg)
    assert "validation" not in res.splits
    warnings = split_warnings(df, res, cfg, SUBSETS)
    assert "splits: validation ratio is 0: no validation split" in warnings
    holder = res.splits[0]
    other = "test" if holder == "train" else "train"
    assert any(w.startswith(f"splits: the {other} split has no ambiguous items (1 in the corpus: ")
               and f"{holder} 1" in w for w in warnings), warnings


def test_bad_ratios_are_clear_errors():
    with pytest.raises(ValidationError, match="sum to 0.9, expected 1"):
        SplitConfig(train=0.6, validation=0.1, test=0.2)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        SplitConfig(train=1.2, validation=-0.2, test=0.0)
    with pytest.raises(ValidationError, match="group_by needs at least one grouping"):
        SplitConfig(group_by=[])


def test_training_mix_holds_only_train_rows_and_splices_only_under_a_rule(samples_dir):
    """Catches: validation/test rows in the training mix, and splices trained on without a target rule
    (they have no true emotion) or under a rule with the other cue's label."""
    df = sample_rows(samples_dir)
    df = df.assign(split=assign_splits(df, SplitConfig()).splits, shard="s", caption="c",
                   label=[None if o == "spliced" else "sad" for o in df["origin"]],
                   face_label="sad", voice_label="happy", target_label=None, target_subset=None)
    mix = train_mix(df)
    train_keys = set(df.loc[(df["split"] == "train") & (df["subset"] != "ambiguous") & (df["origin"] != "spliced"), "key"])
    assert set(mix["key"]) == train_keys and len(train_keys) > 0 and "spliced" not in set(mix["origin"])
    sp = df["origin"] == "spliced"
    df.loc[sp, "target_label"], df.loc[sp, "target_subset"] = "sad", "video_aligned"  # the face rule
    mix = train_mix(df).set_index("key")
    ruled = df[sp & (df["split"] == "train")]
    assert len(ruled) and set(ruled["key"]) <= set(mix.index)
    assert (mix.loc[ruled["key"], "target"].str.startswith("sad. ")).all()
    assert set(mix.loc[ruled["key"], "subset"]) == {"video_aligned"}


def test_a_few_people_are_placed_so_that_every_evaluation_need_is_met():
    """Catches: balancing by row counts alone leaving validation without an audio_aligned item (AR
    cannot be calibrated) or test without a subset, when another placement of the same people meets
    every need (the real sample run: validation held video_aligned 2, audio_aligned 0)."""
    from mosear.mine.summary import cannot_run

    spec = {"A": ["consistent"] * 60 + ["ambiguous"] * 40, "B": ["video_aligned"], "C": ["audio_aligned"],
            "D": ["consistent", "video_aligned"], "E": ["audio_aligned", "consistent"]}
    df = pd.DataFrame([{"key": f"d__{p}{i}", "speaker": p, "face_take": f"d:{p}{i}", "voice_take": f"d:{p}{i}",
                        "origin": "natural", "subset": k, "face_label": None, "voice_label": None}
                       for p, subs in spec.items() for i, k in enumerate(subs)])
    res = assign_splits(df, SplitConfig())
    assert res.grouping == "speaker" and res.person_disjoint
    assert cannot_run(df.assign(split=res.splits)) == [], res.people
    assert res.people["train"] == ["A"] and len(res.people["test"]) >= 2
    assert assign_splits(df, SplitConfig()).splits == res.splits
