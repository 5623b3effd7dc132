"""Counterfactual face/voice splicing: the pair plan (mosear.adapters.splice) and the mux
(mosear.media.splice): sync offset, lossless voice, byte-identical clips."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import scipy.signal

from mosear.adapters.splice import SpliceOptions, SplicePair, plan_pairs
from mosear.media.splice import splice_clip
from mosear.shards.writer import KEY_RE


def _lag_ms(x: np.ndarray, ref: np.ndarray) -> float:
    """Delay of ``x`` against ``ref`` (ms, 16 kHz): positive when ``x`` comes later."""
    n = min(len(x), len(ref))
    c = scipy.signal.correlate(x[:n].astype(np.float32), ref[:n].astype(np.float32), mode="full", method="fft")
    return (int(c.argmax()) - (n - 1)) / 16.0


# 27 faces x the 8 voices (one per emotion) make_samples.py keeps for their actor and statement, less the
# emotions whose every take there is a face (actor 01's neutral, statement 01): 205 pairs, 21 same-emotion
N_RAVDESS_PAIRS, N_CONSISTENT = 205, 21


@pytest.fixture(scope="module")
def plan(samples_dir):
    return plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio")


def test_plan_covers_every_same_statement_pair(plan, samples_dir):
    """Catches: a face paired with another actor's or another statement's voice, with its own take, or
    a face left without splices; keys that are not valid sample keys; a max_pairs plan that skips faces."""
    faces = sorted((samples_dir / "ravdess").glob("*.mp4"))
    assert len(plan) == N_RAVDESS_PAIRS and sum(p.conflict for p in plan) == N_RAVDESS_PAIRS - N_CONSISTENT
    assert all(p.face.statement == p.voice.statement and p.face.actor == p.voice.actor and p.face.take != p.voice.take
               for p in plan)
    assert {p.face.path for p in plan} == set(faces)  # every face of every actor has its splices
    assert {p.face.actor for p in plan} == {"01", "03", "05", "06", "09", "10", "19"}
    assert len({p.key for p in plan}) == len(plan) and all(KEY_RE.match(p.key) for p in plan)
    small = plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio", max_pairs=54, seed=3)
    assert small == plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio", max_pairs=54, seed=3)
    assert set(Counter(p.face.take for p in small).values()) == {2}  # round-robin: 27 faces x 2
    only_conflicts = plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio", include_consistent=False)
    assert len(only_conflicts) == N_RAVDESS_PAIRS - N_CONSISTENT


def test_crema_d_swaps_pair_one_persons_face_with_anothers_voice_same_sentence(samples_dir):
    """Catches: CREMA-D swaps across sentences, a swap without the voice's person (the splits could
    then put 1002's voice in two splits), or keys colliding with RAVDESS ones."""
    swaps = plan_pairs(samples_dir / "crema_d", samples_dir / "crema_d_voice", pairing="crema_d")
    assert len(swaps) == 36 and sum(p.conflict for p in swaps) == 30
    assert {(p.face.person, p.voice.person) for p in swaps} == {("crema_d_1001", "crema_d_1002")}
    assert {p.face.statement for p in swaps} == {"DFA"} and all(KEY_RE.match(p.key) for p in swaps)
    assert all(p.key.startswith("crema_d__splice_f1001_DFA_") for p in swaps)


@pytest.mark.parametrize("label", ["alternate", "face", "voice"])
def test_a_splice_source_asking_for_a_label_is_a_config_error(label):
    """Catches: the key-hash coin flip (label: alternate) or any per-source label coming back: a splice
    has no true emotion; a training target is a rule of the mining config."""
    with pytest.raises(ValueError, match="no true emotion.*train_mix.splice_target"):
        SpliceOptions(voices="v", label=label)
    assert SpliceOptions(voices="v").label is None


@pytest.mark.parametrize("suffix", [".mov", ".mp4"])  # PCM (what the shard stage decodes) and AAC
def test_default_offset_puts_a_voice_where_its_own_take_was(samples_dir, tmp_path, suffix):
    """Splice a face with the audio-only twin of its own take: with the default offset the voice lines
    up with the clip's original audio track; without it, it is a frame early."""
    from mosear.media.decode import decode_clip

    face = samples_dir / "ravdess" / "01-01-03-01-01-02-05.mp4"
    voice = samples_dir / "ravdess_sync" / "03-01-03-01-01-02-05.flac"  # the face's own take, audio-only
    ref = decode_clip(face, num_frames=2, height=32, width=32)
    lags = {}
    for off in (0.033, 0.0):
        out = splice_clip(face, voice, tmp_path / f"s{off}{suffix}", off)
        clip = decode_clip(out, num_frames=2, height=32, width=32)
        assert abs(clip.duration_s - ref.duration_s) < 0.05  # the video decides the length
        lags[off] = _lag_ms(clip.audio, ref.audio)
    assert abs(lags[0.033]) <= 2.0, lags
    assert -40 < lags[0.0] < -26, lags


def test_ffmpeg_failure_is_an_error_with_ffmpegs_message(tmp_path, samples_dir):
    import ffmpeg

    broken = tmp_path / "03-01-05-01-01-01-05.flac"
    broken.write_bytes(b"not audio")
    with pytest.raises(ffmpeg.Error) as exc:
        splice_clip(samples_dir / "ravdess" / "01-01-03-01-01-02-05.mp4", broken, tmp_path / "o.mp4")
    assert exc.value.stderr


def test_pair_key_is_a_valid_sample_key(plan):
    p: SplicePair = plan[0]
    assert p.key.startswith("ravdess__splice_f") and "_v" in p.key


def test_spliced_clip_is_lossless_and_byte_identical(samples_dir, tmp_path):
    """The clip the shard stage decodes: the voice exactly as decoded (PCM, no lossy re-encode), and
    the same bytes every time (single-threaded, bitexact, no copied metadata)."""
    from mosear.media.decode import decode_clip

    face = samples_dir / "ravdess" / "01-01-03-01-01-02-05.mp4"
    voice = sorted((samples_dir / "ravdess_audio").glob("03-01-05-*-02-*-05.flac"))[0]  # angry, statement 02
    a = splice_clip(face, voice, tmp_path / "a.mov", 0.0)
    b = splice_clip(face, voice, tmp_path / "b.mov", 0.0)
    assert a.read_bytes() == b.read_bytes()
    spliced = decode_clip(a, num_frames=2, height=32, width=32)
    own = decode_clip(face, num_frames=2, height=32, width=32)
    np.testing.assert_array_equal(spliced.frames, own.frames)  # video copied bit for bit
    import av

    with av.open(str(voice)) as c:  # the voice take itself, 16 kHz mono s16
        ref = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    n = min(len(ref), len(spliced.audio))
    np.testing.assert_array_equal(spliced.audio[:n], ref[:n])


def test_training_on_splices_needs_a_named_target_rule():
    """Catches: a mine config training on splices under a coin flip (``alternate``) or an unnamed rule;
    the default leaves splices out of the training mix."""
    from mosear.mine.config import MineConfig

    assert MineConfig().train_mix.splice_target == "none"
    assert MineConfig(train_mix={"splice_target": "face"}).train_mix.splice_target == "face"
    for bad in ("alternate", "both", ""):
        with pytest.raises(ValueError, match="no true emotion, so its training target needs a rule: face | voice"):
            MineConfig(train_mix={"splice_target": bad})
