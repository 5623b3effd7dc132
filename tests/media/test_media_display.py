"""Media as players show them: display-matrix rotation, and containers beyond MP4 (MPEG-TS, raw
elementary streams), checked against the ffmpeg command-line tool's own decode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from mosear.media.decode import decode_clip

SOURCE = "ravdess/01-01-03-01-01-02-05.mp4"  # 480x270 h264 + aac


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, capture_output=True)


def _ffmpeg_frames(path: Path, h: int, w: int) -> np.ndarray:
    """Every frame as the ffmpeg CLI decodes it for display (autorotate on, its default), RGB."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="module")
def small_clip(samples_dir, tmp_path_factory) -> Path:
    """1.5 s of a sample clip at 96x54, re-encoded so the frames are cheap to compare."""
    out = tmp_path_factory.mktemp("display") / "small.mp4"
    _ffmpeg("-i", str(samples_dir / SOURCE), "-t", "1.5", "-vf", "scale=96:54", "-c:v", "libx264", "-pix_fmt",
            "yuv420p", "-c:a", "aac", str(out))
    return out


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotated_clip_frames_are_upright(small_clip, tmp_path, rotate):
    """A phone-style clip (display matrix, no re-encode) gives the frames the player shows."""
    rotated = tmp_path / f"rot{rotate}.mp4"
    _ffmpeg("-i", str(small_clip), "-c", "copy", "-metadata:s:v", f"rotate={rotate}", str(rotated))
    h, w = (96, 54) if rotate in (90, 270) else (54, 96)  # upright size
    clip = decode_clip(rotated, num_frames=6, height=h, width=w)  # native size: no scaling
    assert clip.probe.rotation in (rotate, rotate - 360) and not clip.probe.mirrored
    ref = _ffmpeg_frames(rotated, h, w)
    stored = decode_clip(small_clip, num_frames=6, height=54, width=96).frames
    for i, (img, t) in enumerate(zip(clip.frames, clip.frame_times_s)):
        want = ref[round(t * clip.probe.fps)]
        assert np.abs(img.astype(int) - want.astype(int)).mean() < 3.0, (rotate, i)
    if rotate == 180:  # the same shape as stored: the stored (unturned) frames are far from upright
        assert np.abs(clip.frames.astype(int) - stored.astype(int)).mean() > 20


def test_rotation_recorded_and_applied_before_crop(small_clip, tmp_path):
    """At a square crop the upright frame's centre is shown (not the stored frame's, turned)."""
    rotated = tmp_path / "rot90.mp4"
    _ffmpeg("-i", str(small_clip), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated))
    clip = decode_clip(rotated, num_frames=4, height=32, width=32)
    ref = _ffmpeg_frames(rotated, 96, 54)
    import cv2

    for img, t in zip(clip.frames, clip.frame_times_s):
        full = ref[round(t * clip.probe.fps)]
        scaled = cv2.resize(full, (32, 57), interpolation=cv2.INTER_AREA)  # 54x96 -> 32 wide, covers 32x32
        want = scaled[(57 - 32) // 2:(57 - 32) // 2 + 32]
        assert np.abs(img.astype(int) - want.astype(int)).mean() < 6.0


CONTAINERS = {
    "ts": ["-c", "copy", "-f", "mpegts"],
    "m2ts": ["-c", "copy", "-f", "mpegts"],
    "mts": ["-c", "copy", "-f", "mpegts"],
    "h264": ["-an", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"],  # raw elementary stream
    "m2v": ["-an", "-c:v", "mpeg2video", "-q:v", "2", "-f", "mpeg2video"],
}


@pytest.mark.parametrize("ext", sorted(CONTAINERS))
def test_other_containers_decode_like_ffmpeg(small_clip, tmp_path, ext):
    path = tmp_path / f"clip.{ext}"
    _ffmpeg("-i", str(small_clip), *CONTAINERS[ext], str(path))
    clip = decode_clip(path, num_frames=5, height=54, width=96, missing_audio="silence")
    assert clip.has_audio == (ext in ("ts", "m2ts", "mts"))
    assert clip.duration_s == pytest.approx(1.5, abs=0.1) and clip.probe.fps == pytest.approx(29.97, rel=0.01)
    ref = _ffmpeg_frames(path, 54, 96)
    for img, t in zip(clip.frames, clip.frame_times_s):
        want = ref[round((t - clip.video_start_s) * clip.probe.fps)]
        assert np.abs(img.astype(int) - want.astype(int)).mean() < 3.0


def _remux_with_display(src: Path, dst: Path, degrees: int, hflip: bool) -> None:
    """Copy the video stream, writing a display matrix (PyAV; ffmpeg 5.1's CLI cannot write a flip)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        stream.set_display_rotation(degrees, hflip=hflip)
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


@pytest.mark.parametrize("degrees, hflip", [(0, True), (90, True), (-90, False), (180, True)])
def test_mirrored_and_rotated_display_matrix(small_clip, tmp_path, degrees, hflip):
    """Every EXIF-style orientation: the frames equal the stored frames turned and mirrored."""
    path = tmp_path / "oriented.mp4"
    _remux_with_display(small_clip, path, degrees, hflip)
    turned = degrees % 180 != 0
    h, w = (96, 54) if turned else (54, 96)
    clip = decode_clip(path, num_frames=4, height=h, width=w, missing_audio="silence")
    assert (clip.probe.rotation, clip.probe.mirrored) == (degrees, hflip)
    stored = decode_clip(small_clip, num_frames=4, height=54, width=96).frames
    want = np.rot90(stored, k=degrees // 90, axes=(1, 2))  # counter-clockwise
    if hflip:
        want = want[:, :, ::-1]
    np.testing.assert_array_equal(clip.frames, want)
