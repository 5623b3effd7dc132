"""Counterfactual face/voice splicing: the pair plan (mosear.adapters.splice) and the mux
(mosear.media.splice): sync offset, lossless voice, byte-identical clips."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import scipy.signal

from mosear.adapters.splice import SplicePair, plan_pairs, spliced_label
from mosear.media.splice import splice_clip
from mosear.shards.writer import KEY_RE


def _lag_ms(x: np.ndarray, ref: np.ndarray) -> float:
    """Delay of ``x`` against ``ref`` (ms, 16 kHz): positive when ``x`` comes later."""
    n = min(len(x), len(ref))
    c = scipy.signal.correlate(x[:n].astype(np.float32), ref[:n].astype(np.float32), mode="full", method="fft")
    return (int(c.argmax()) - (n - 1)) / 16.0


@pytest.fixture(scope="module")
def plan(samples_dir):
    return plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio")


def test_plan_covers_every_same_statement_pair(plan, samples_dir):
    assert len(plan) == 406 and sum(p.conflict for p in plan) == 366  # 366 conflicts, as the data README says
    assert all(p.face.statement == p.voice.statement and p.face.take != p.voice.take for p in plan)
    assert len({p.key for p in plan}) == len(plan) and all(KEY_RE.match(p.key) for p in plan)
    small = plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio", max_pairs=28, seed=3)
    assert small == plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio", max_pairs=28, seed=3)
    assert set(Counter(p.face.take for p in small).values()) == {2}  # round-robin: 14 faces x 2
    only_conflicts = plan_pairs(samples_dir / "ravdess", samples_dir / "ravdess_audio", include_consistent=False)
    assert len(only_conflicts) == 366


def test_label_rule(plan):
    conflict = next(p for p in plan if p.conflict)
    assert spliced_label(conflict, "face") == conflict.face.label
    assert spliced_label(conflict, "voice") == conflict.voice.label
    labels = Counter(spliced_label(p, "alternate") == p.face.label for p in plan if p.conflict)
    assert 0.35 < labels[True] / sum(labels.values()) < 0.65  # both conflict directions are populated


@pytest.mark.parametrize("suffix", [".mov", ".mp4"])  # PCM (what the shard stage decodes) and AAC
def test_default_offset_puts_a_voice_where_its_own_take_was(samples_dir, tmp_path, suffix):
    """Splice a face with the audio-only twin of its own take: with the default offset the voice lines
    up with the clip's original audio track; without it, it is a frame early."""
    from mosear.media.decode import decode_clip

    face = samples_dir / "ravdess" / "01-01-03-01-01-02-05.mp4"
    voice = samples_dir / "ravdess_audio" / "03-01-03-01-01-02-05.flac"
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
    voice = samples_dir / "ravdess_audio" / "03-01-05-01-01-02-05.flac"
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
