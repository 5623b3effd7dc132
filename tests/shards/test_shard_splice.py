"""Counterfactual face/voice pairs declared in the corpus are a shard source like any other: planned,
written with the per-modality truth in their metadata, quarantined with a reason, resumed by content."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from shard_helpers import shard_cfg

PAIRS = 4


def _corpus(samples_dir, root, **options):
    """A corpus of 3 RAVDESS faces, every voice take, and a splice source over them."""
    (root / "faces").mkdir(parents=True)
    for c in sorted((samples_dir / "ravdess").glob("*.mp4"))[:3]:
        shutil.copy2(c, root / "faces" / c.name)
    shutil.copytree(samples_dir / "ravdess_audio", root / "voices")
    (root / "voices" / "notes.txt").write_text("not a take")  # reported as skipped, never silent
    opts = {"faces": "faces", "voices": "voices", "max_pairs": PAIRS, **options}
    (root / "corpus.yaml").write_text(json.dumps({"sources": [
        {"adapter": "ravdess", "root": "faces"}, {"adapter": "splice", "root": ".", "options": opts}]}))
    return root


def _stats(out):
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.stats.json"))}


def test_splices_are_written_by_the_shard_stage(samples_dir, ray_local, tmp_path):
    from mosear.adapters.splice import plan_pairs
    from mosear.shards.reader import iter_samples, list_shards
    from mosear.shards.run import run_shard

    root = _corpus(samples_dir, tmp_path / "c")
    out = tmp_path / "shards"
    res = run_shard(shard_cfg(root, out, samples_per_shard=2))
    # inputs = 3 natural + 4 pairs + 1 skipped file; the pairs fill spliced-NNNNNN shards
    assert (res.inputs, res.written, res.quarantined, res.skipped) == (3 + PAIRS + 1, 3 + PAIRS, 0, 1)
    assert res.skipped_report["by_reason"] == {"not_a_take": 1}
    spliced = [p for p in list_shards(out) if p.name.startswith("spliced-")]
    assert [p.name for p in spliced] == ["spliced-000000.tar", "spliced-000001.tar"]
    want = {p.key for p in plan_pairs(root / "faces", root / "voices", max_pairs=PAIRS)}
    samples = list(iter_samples(spliced))
    assert {s["key"] for s in samples} == want
    for s in samples:
        ex = s["meta"]["extra"]
        assert ex["origin"] == "spliced" and ex["offset_s"] == 0.033 and ex["conflict"] == (ex["face_label"] != ex["voice_label"])
        assert s["meta"]["label"] is None and s["meta"]["split"] == "spliced"  # a splice has no true emotion
        assert ex["face_take"] != ex["voice_take"] and s["frames"].shape == (4, 32, 48, 3) and s["meta"]["has_audio"]
        assert " + " in s["meta"]["source"] and s["meta"]["codecs"]["audio"] == "pcm_s16le"
    for name, st in _stats(out).items():  # what made the clips, for a rebuild elsewhere
        assert (st.get("splice_format") == "mov-pcm16-bitexact") == name.startswith("spliced-")


def test_a_voice_replaced_rebuilds_exactly_its_shards_byte_identically(samples_dir, ray_local, tmp_path):
    from mosear.shards.run import run_shard

    root = _corpus(samples_dir, tmp_path / "c")
    out = tmp_path / "shards"
    run_shard(shard_cfg(root, out, samples_per_shard=2))
    before = _stats(out)
    again = run_shard(shard_cfg(root, out, samples_per_shard=2))
    assert again.shards_skipped == again.shards and _stats(out) == before  # nothing changed: nothing rebuilt

    index = pq.read_table(out / "spliced-000000.index.parquet").to_pylist()
    voice_take = index[0]["key"].split("_v", 1)[1]
    voice = root / "voices" / f"03-01-{voice_take}.flac"
    original = voice.read_bytes()
    other = next(p for p in sorted((root / "voices").glob("*.flac")) if p != voice)
    shutil.copyfile(other, voice)  # the same name, another take's bytes
    run_shard(shard_cfg(root, out, samples_per_shard=2))
    after = _stats(out)
    rebuilt = {n for n in before if before[n]["tar_sha256"] != after[n]["tar_sha256"]}
    assert "spliced-000000.stats.json" in rebuilt and not any(n.startswith("train-") for n in rebuilt)

    voice.write_bytes(original)  # back to the original bytes: the original tar, byte for byte
    run_shard(shard_cfg(root, out, samples_per_shard=2))
    assert {n: s["tar_sha256"] for n, s in _stats(out).items()} == {n: s["tar_sha256"] for n, s in before.items()}


def test_a_pair_that_cannot_be_muxed_is_quarantined(samples_dir, ray_local, tmp_path):
    from mosear.shards.run import run_shard

    root = _corpus(samples_dir, tmp_path / "c")
    for v in (root / "voices").glob("*.flac"):
        v.write_bytes(b"not audio")  # every voice broken: every pair fails, the natural clips are written
    res = run_shard(shard_cfg(root, tmp_path / "shards", max_item_error_fraction=1.0))
    assert res.written == 3 and res.failures == {"splice_failed": PAIRS}
    q = pq.read_table(tmp_path / "shards" / "quarantine.parquet").to_pylist()
    assert {r["reason"] for r in q} == {"splice_failed"} and all(r["error"] for r in q)
    assert res.inputs == res.written + res.quarantined + res.skipped


@pytest.mark.parametrize("options, message", [
    ({"offset": 0.1}, "offset"),                       # a typo is an error, not ignored
    ({"pairing": "by_speaker"}, "pairing"),
    ({"voices": "no_such_folder"}, "no_such_folder"),
])
def test_bad_splice_options_stop_before_any_work(samples_dir, tmp_path, options, message):
    from mosear.config import ConfigError
    from mosear.shards.plan import plan_corpus

    root = _corpus(samples_dir, tmp_path / "c", **options)
    with pytest.raises(ConfigError, match=message):
        plan_corpus(shard_cfg(root, tmp_path / "shards"))
