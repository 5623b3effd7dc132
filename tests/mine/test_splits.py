"""Group-disjoint splits (mosear/mine/splits.py) on rows built from the sample corpus's real file names
(RAVDESS actor 05, its audio-only takes and their splices, CREMA-D), and on a many-speaker table."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from mosear.mine.assemble import train_mix
from mosear.adapters.splice import plan_pairs
from mosear.mine.splits import SPLITS, UNASSIGNED, SplitConfig, assign_splits, split_warnings
from mosear.mine.subsets import SUBSETS

SUBS = ("consistent", "video_aligned", "audio_aligned", "ambiguous")


def sample_rows(samples_dir: Path) -> pd.DataFrame:
    """One row per clip the sample run mines: 14 natural RAVDESS clips, 7 CREMA-D clips, every splice."""
    rows = []
    for i, p in enumerate(sorted((samples_dir / "ravdess").glob("*.mp4"))):
        take = "ravdess:" + "-".join(p.stem.split("-")[2:])
        rows.append({"key": f"ravdess__{p.stem}", "speaker": "ravdess_05", "face_take": take, "voice_take": take,
                     "origin": "natural", "subset": SUBS[i % 4], "transcript": "Kids are talking by the door"})
    crema = ["1001_DFA_ANG_XX"] + [p.stem for p in sorted((samples_dir / "crema_d_extra").glob("*.mp4"))]
    for i, c in enumerate(crema):
        rows.append({"key": f"crema_d__{c}", "speaker": "crema_d_1001" if c[0].isdigit() else None,
                     "face_take": f"crema_d:{c}", "voice_take": f"crema_d:{c}", "origin": "natural",
                     "subset": SUBS[(i + 1) % 4], "transcript": None})
    for i, pair in enumerate(plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio")):
        rows.append({"key": pair.key, "speaker": "ravdess_05", "face_take": f"ravdess:{pair.face.take}",
                     "voice_take": f"ravdess:{pair.voice.take}", "origin": "spliced", "subset": SUBS[(i + 2) % 4],
                     "transcript": None})
    return pd.DataFrame(rows)


def test_missing_speakers_and_takes_never_join_rows(samples_dir):
    """Rows without a speaker (the CREMA-D re-encodes) are groups of their own, also when pandas holds the
    missing value as NaN: they must not all fall into one 'no speaker' group."""
    df = sample_rows(samples_dir)
    df = df[df["key"].str.startswith("crema_d")]
    df = df.assign(speaker=pd.array([x if isinstance(x, str) else None for x in df["speaker"]], dtype="str"))
    assert df["speaker"].isna().sum() == 6
    res = assign_splits(df, SplitConfig(group_by=["speaker"]))
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


def test_single_speaker_sample_falls_back_to_source_takes_and_says_so(samples_dir):
    df = sample_rows(samples_dir)
    cfg = SplitConfig()
    res = assign_splits(df, cfg)
    assert res.grouping == "take"
    assert [f["grouping"] for f in res.fallbacks] == ["speaker"]
    assert "speaker-disjoint splits impossible" in res.fallbacks[0]["reason"]
    assert_disjoint(df, res.splits, by_speaker=False)
    counts = pd.Series(res.splits).value_counts()
    placed = len(df) - counts.get(UNASSIGNED, 0)
    for s in SPLITS:  # each split got at least half its target share of the placed rows
        assert counts.get(s, 0) >= 0.5 * cfg.ratios()[s] * placed, counts
    # natural clips (face and voice one take) are always placed; only splices can be unassigned
    natural = df["origin"] == "natural"
    assert UNASSIGNED not in {s for s, n in zip(res.splits, natural) if n}
    assert res.unassigned_reason.get("face and voice sources in different splits", 0) == res.splits.count(UNASSIGNED)
    warnings = split_warnings(df, res, cfg, SUBSETS)
    assert any("grouping 'speaker' passed over" in w and "used 'take'" in w for w in warnings), warnings
    assert any("speaker(s) appear in more than one split" in w for w in warnings), warnings
    # the same rows and config give the same splits, whatever the row order
    assert assign_splits(df, SplitConfig()).splits == res.splits
    assert assign_splits(df.sample(frac=1, random_state=3).sort_index(), cfg).splits == res.splits


def test_splice_joins_its_split_only_when_face_and_voice_are_both_there(samples_dir):
    df = sample_rows(samples_dir)
    res = assign_splits(df, SplitConfig(group_by=["take"]))
    split_of_take: dict[str, str] = {}
    for r, s in zip(df.to_dict("records"), res.splits):
        if r["origin"] == "natural":
            split_of_take[r["face_take"]] = s
    for r, s in zip(df.to_dict("records"), res.splits):
        f, v = split_of_take.get(r["face_take"]), split_of_take.get(r["voice_take"])
        if r["origin"] == "spliced" and f is not None and v is not None:
            assert s == (f if f == v else UNASSIGNED), r["key"]


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


def test_training_mix_holds_only_train_rows(samples_dir):
    df = sample_rows(samples_dir)
    df = df.assign(split=assign_splits(df, SplitConfig()).splits, shard="s", label="sad", caption="c")
    mix = train_mix(df)
    train_keys = set(df.loc[(df["split"] == "train") & (df["subset"] != "ambiguous"), "key"])
    assert set(mix["key"]) == train_keys and len(train_keys) > 0
