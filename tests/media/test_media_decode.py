"""The PyAV decoder on real clips, cross-checked against the ffmpeg / ffprobe command-line tools."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from mosear.media.decode import MediaError, decode_clip, probe, resize_frame

CLIPS = ["ravdess/01-01-03-01-01-02-05.mp4", "crema_d_extra/sad_correct.mp4", "crema_d/1001_DFA_ANG_XX.flv"]


def _ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("rel", CLIPS)
def test_probe_matches_ffprobe(samples_dir, rel):
    path = samples_dir / rel
    info = probe(path)
    ref = _ffprobe(path)
    v = next(s for s in ref["streams"] if s["codec_type"] == "video")
    a = next(s for s in ref["streams"] if s["codec_type"] == "audio")
    assert (info.width, info.height) == (v["width"], v["height"])
    assert info.video_codec == v["codec_name"] and info.audio_rate == int(a["sample_rate"])
    num, den = map(int, v["avg_frame_rate"].split("/"))
    assert info.fps == pytest.approx(num / den, rel=1e-3)
    stated = float(v.get("duration") or ref["format"]["duration"])
    assert info.duration_s == pytest.approx(stated, abs=0.05)
    assert info.has_audio and info.has_video and info.bytes == path.stat().st_size


@pytest.mark.parametrize("rel", CLIPS)
def test_decode_shapes_and_times(samples_dir, rel):
    clip = decode_clip(samples_dir / rel, num_frames=8, height=64, width=96)
    assert clip.frames.shape == (8, 64, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.sample_rate == 16000 and clip.audio.dtype == np.int16 and clip.audio.ndim == 1
    assert abs(clip.audio_seconds - clip.duration_s) < 0.15 and clip.has_audio
    # targets (i + 0.5) * D / T, each matched by the nearest frame: within one frame interval
    step = clip.duration_s / 8
    for i, t in enumerate(clip.frame_times_s):
        assert abs(t - clip.video_start_s - (i + 0.5) * step) <= 1.0 / clip.probe.fps + 1e-6
    assert len(set(clip.frame_times_s)) == 8  # 8 distinct frames from a ~90-frame clip


def test_frames_equal_ffmpeg_frames(samples_dir):
    """At native size the kept frames are the very frames ffmpeg decodes at those times."""
    path = samples_dir / "crema_d_extra" / "sad_correct.mp4"
    clip = decode_clip(path, num_frames=6, height=240, width=320)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True).stdout
    all_frames = np.frombuffer(raw, np.uint8).reshape(-1, 240, 320, 3)
    for img, t in zip(clip.frames, clip.frame_times_s):
        ref = all_frames[round(t * clip.probe.fps)]
        assert np.abs(img.astype(int) - ref.astype(int)).mean() < 2.0


def test_audio_equals_ffmpeg_resample(samples_dir):
    path = samples_dir / "ravdess" / "01-01-04-01-01-01-05.mp4"
    clip = decode_clip(path, num_frames=2, height=16, width=16)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", "16000", "-f", "s16le", "-"],
                         check=True, capture_output=True).stdout
    ref = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    ours = clip.audio.astype(np.float32) / 32768
    n = min(len(ref), len(ours))
    assert abs(len(ref) - len(ours)) < 1600  # within 0.1 s
    assert np.corrcoef(ref[:n], ours[:n])[0, 1] > 0.98


def test_resize_crop_and_pad():
    img = np.full((90, 160, 3), 200, np.uint8)  # 16:9 already scaled
    crop = resize_frame(img, 90, 90, "crop")
    assert crop.shape == (90, 90, 3) and (crop == 200).all()
    pad = resize_frame(img, 160, 160, "pad")
    assert pad.shape == (160, 160, 3)
    assert (pad[35:125] == 200).all() and (pad[:35] == 0).all() and (pad[125:] == 0).all()


def test_pad_keeps_the_whole_picture(samples_dir):
    """pad: a 16:9 clip in a square has black bars top and bottom; crop: none."""
    path = samples_dir / "ravdess" / "01-01-03-01-01-02-05.mp4"
    padded = decode_clip(path, num_frames=2, height=64, width=64, resize="pad").frames
    cropped = decode_clip(path, num_frames=2, height=64, width=64, resize="crop").frames
    assert padded[:, :10].max() == 0 and padded[:, -10:].max() == 0 and padded[:, 30].max() > 0
    assert cropped[:, :10].max() > 0


@pytest.mark.parametrize("content,reason", [(b"", "empty_file"), (b"not a video at all\n" * 10, "corrupt")])
def test_errors_have_reasons(tmp_path, content, reason):
    p = tmp_path / "x.mp4"
    p.write_bytes(content)
    with pytest.raises(MediaError) as err:
        decode_clip(p)
    assert err.value.reason == reason and p.name in str(err.value)


def test_missing_and_folder(tmp_path):
    with pytest.raises(MediaError, match="missing"):
        decode_clip(tmp_path / "nope.mp4")
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(MediaError, match="not_a_file"):
        probe(tmp_path / "d.mp4")


def test_original_full_resolution(shared_data):
    """The 1280x720 originals decode the same way (only the kept frames are scaled)."""
    clip = decode_clip(shared_data / "ravdess_actor05" / "01-01-03-01-01-02-05.mp4", num_frames=4, height=56, width=56)
    assert clip.probe.width == 1280 and clip.probe.audio_channels == 2 and clip.frames.shape == (4, 56, 56, 3)
