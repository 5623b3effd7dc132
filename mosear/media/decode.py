"""Probe and decode a clip in one container open and one demux/decode pass (PyAV).

Why PyAV and not ffmpeg subprocesses: each ffmpeg/ffprobe process costs ~100 ms to start on the
reference machine, as much as decoding a 360p clip (DESIGN.md §6). Here the probe is read from the same
container the decoder uses, audio and video packets come from a single demux loop, and only the frames
that are kept are converted to RGB and scaled.

Outputs (:class:`DecodedClip`):

- ``frames``: uint8 ``[T, H, W, 3]`` RGB, ``T = num_frames`` frames whose target times are uniformly
  spread over the video stream, ``t_i = start + (i + 0.5) * duration / T`` seconds; for each target the
  decoded frame nearest in time is kept. Resize preserves the aspect ratio, then center-crops
  (``resize="crop"``) or zero-pads (``resize="pad"``) to ``H x W``.
  Frames are upright as a player shows them: a display matrix (phone clips' rotation, a mirror flip)
  is applied to each frame before the resize (``rotation``: degrees counter-clockwise, ffprobe's
  ``rotation``; ``mirrored``: a horizontal flip was part of it).
- ``audio``: int16 ``[N]`` mono at ``sample_rate`` Hz (libswresample), the whole audio track.
- ``warnings``: what libav reported while decoding (packets it could not decode, concealed errors in
  frames it did decode); a clip with warnings is still kept, and the shard index stores them.

Raw elementary streams (``.h264``, ``.hevc``, ``.m2v``, ...) have no container duration or timestamps:
their duration is the sum of the video packets' durations and their frame rate the packet count over it.

Failures raise :class:`MediaError` with a short machine-readable ``reason`` (see :data:`REASONS`) and a
human message; nothing is returned half-made.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
import numpy as np

__all__ = ["MediaError", "ProbeInfo", "DecodedClip", "probe", "decode_clip", "resize_frame", "REASONS"]

REASONS: dict[str, str] = {
    "missing": "the file does not exist (or is a dangling link)",
    "not_a_file": "the path is not a regular file (a folder, a device, ...)",
    "unreadable": "the file cannot be opened for reading (permissions, I/O error)",
    "empty_file": "the file has zero bytes",
    "corrupt": "libav cannot open the container (not media, or the header/index is damaged)",
    "no_video": "the container has no video stream",
    "no_audio": "the container has no audio stream (and the config quarantines such clips)",
    "truncated": "the video stream ends long before its stated duration",
    "decode_error": "no frame could be decoded",
    "splice_failed": "ffmpeg could not mux a counterfactual face/voice pair (mosear.media.splice)",
}

# A video that stops short of its stated duration by more than this is called truncated (seconds,
# or two frame intervals, whichever is larger). Real clips end within a frame or two of it.
_TRUNCATION_TOLERANCE_S = 0.5
# Warnings kept per clip (the count is always exact): a badly damaged file logs one line per macroblock.
MAX_WARNINGS = 20


class MediaError(Exception):
    """A clip that cannot be used. ``reason`` is a key of :data:`REASONS`; the message says more."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass
class ProbeInfo:
    """What ffprobe would report, read from the open container. Times in seconds."""

    container: str
    duration_s: float | None
    start_s: float
    has_video: bool
    has_audio: bool
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_frames: int | None = None  # from the header; 0/None when the container does not say
    audio_codec: str | None = None
    audio_rate: int | None = None
    audio_channels: int | None = None
    bytes: int = 0
    # display matrix (read from the first decoded frame: decode_clip fills these, probe() leaves 0):
    rotation: int = 0  # degrees counter-clockwise the stored frames are turned for display
    mirrored: bool = False  # a horizontal flip after the rotation

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DecodedClip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    frame_times_s: list[float]  # presentation time of each kept frame, seconds
    audio: np.ndarray  # int16 [N], mono
    sample_rate: int  # Hz
    has_audio: bool  # False: ``audio`` is filled silence
    duration_s: float  # the video duration the frames were sampled over
    video_start_s: float  # start time of the video stream (frame times count from the file's zero)
    probe: ProbeInfo
    warnings: list[str] = field(default_factory=list)  # at most MAX_WARNINGS distinct messages
    num_warnings: int = 0  # every warning libav reported, including those not kept in ``warnings``

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def _check_path(path: Path) -> int:
    """Reasons that need no libav: missing, not a file, unreadable, empty. Returns the size in bytes."""
    try:
        st = os.stat(path)  # follows links: a dangling link raises FileNotFoundError
    except FileNotFoundError:
        raise MediaError("missing", f"{path} does not exist") from None
    except OSError as exc:
        raise MediaError("unreadable", f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError("not_a_file", f"{path} is not a regular file")
    if st.st_size == 0:
        raise MediaError("empty_file", f"{path} has zero bytes")
    if not os.access(path, os.R_OK):
        raise MediaError("unreadable", f"{path}: permission denied")
    return st.st_size


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except PermissionError as exc:
        raise MediaError("unreadable", f"{path}: {exc.strerror or exc}") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError("corrupt", f"libav cannot open {path.name}: {exc}") from None
    except OSError as exc:
        raise MediaError("unreadable", f"{path}: {exc}") from None


def _probe_container(container: av.container.InputContainer, size: int) -> ProbeInfo:
    v = container.streams.video[0] if container.streams.video else None
    a = container.streams.audio[0] if container.streams.audio else None
    duration = container.duration / av.time_base if container.duration else None
    info = ProbeInfo(
        container=container.format.name,
        duration_s=duration,
        start_s=(container.start_time or 0) / av.time_base,
        has_video=v is not None,
        has_audio=a is not None,
        bytes=size,
    )
    if v is not None:
        cc = v.codec_context
        info.video_codec = cc.name if cc is not None else None
        info.width, info.height = cc.width, cc.height
        rate = v.average_rate or v.guessed_rate or v.base_rate
        info.fps = float(rate) if rate else None
        info.video_frames = int(v.frames) or None
        if v.duration and v.time_base:  # the video stream's own duration beats the container's
            info.duration_s = float(v.duration * v.time_base)
    if a is not None:
        cc = a.codec_context
        info.audio_codec = cc.name if cc is not None else None
        info.audio_rate = cc.sample_rate
        info.audio_channels = cc.channels
    return info


def probe(path: str | Path) -> ProbeInfo:
    """ffprobe-equivalent facts about ``path`` (opens the container, decodes nothing)."""
    path = Path(path)
    size = _check_path(path)
    with _open(path) as container:
        return _probe_container(container, size)


def resize_frame(img: np.ndarray, height: int, width: int, mode: Literal["crop", "pad"]) -> np.ndarray:
    """Center-crop or zero-pad an already aspect-scaled ``[h, w, 3]`` image to ``[height, width, 3]``."""
    h, w = img.shape[:2]
    if mode == "crop":
        top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
        img = img[top : top + height, left : left + width]
    out = np.zeros((height, width, 3), dtype=np.uint8)
    h, w = img.shape[:2]
    top, left = (height - h) // 2, (width - w) // 2
    out[top : top + h, left : left + w] = img
    return out


def _scaled_size(src_w: int, src_h: int, height: int, width: int, mode: str) -> tuple[int, int]:
    """Aspect-preserving size that covers (crop) or fits inside (pad) ``height x width``."""
    scale = (max if mode == "crop" else min)(width / src_w, height / src_h)
    if mode == "crop":
        return max(width, math.ceil(src_w * scale - 1e-6)), max(height, math.ceil(src_h * scale - 1e-6))
    return min(width, max(1, round(src_w * scale))), min(height, max(1, round(src_h * scale)))


@dataclass(frozen=True)
class _Orientation:
    """How to turn a stored frame upright (from its display matrix). ``transpose`` swaps the axes first."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0  # degrees counter-clockwise (ffprobe's ``rotation``)
    mirrored: bool = False

    def display_size(self, w: int, h: int) -> tuple[int, int]:
        return (h, w) if self.transpose else (w, h)

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.transpose:
            img = img.transpose(1, 0, 2)
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return img


def _orientation(frame: av.VideoFrame, warnings: list[str]) -> _Orientation:
    """The display matrix of ``frame`` (libav side data) as axis swaps and flips.

    libavutil/display.h: a stored pixel ``(p, q)`` (column, row) is shown at
    ``p' = a*p + c*q + x``, ``q' = b*p + d*q + y`` with the matrix ``[a b u; c d v; x y w]`` (16.16 fixed
    point). Only axis-aligned matrices (multiples of 90 degrees, optionally mirrored) are applied; any
    other angle is reported as a warning and the frames are kept as stored.
    """
    # Read from a 2x2 gray copy (libav copies the frame's side data with it; gray is an output every
    # swscale input converts to): PyAV's side-data view and the frame it reads form a reference cycle,
    # so reading ``frame.side_data`` itself would keep the whole decoded picture (1.4 MB at 720p) alive
    # until a full garbage collection, one per clip: a shard worker's memory climbed by ~10 MB per shard
    # of 10 clips before each such collection (docs/shard.md).
    sd = frame.reformat(width=2, height=2, format="gray").side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    if sd is None:
        return _Orientation()
    m = np.frombuffer(bytes(sd), dtype=np.int32)[:9].astype(np.float64) / 65536.0
    a, b, c, d = m[0], m[1], m[3], m[4]
    mirrored = bool(a * d - b * c < 0)
    if mirrored:  # read as "rotate, then flip horizontally" (PyAV's set_display_rotation, EXIF's order)
        rotation = -math.degrees(math.atan2(b / math.hypot(b, d), -a / math.hypot(a, c)))
        rotation = int(round(rotation)) % 360
        rotation = rotation - 360 if rotation > 180 else rotation
    else:
        rotation = int(round(frame.rotation or 0))
    tol = 1e-3
    if abs(b) < tol and abs(c) < tol and abs(a) > tol and abs(d) > tol:
        o = _Orientation(False, flip_rows=d < 0, flip_cols=a < 0, rotation=rotation, mirrored=mirrored)
    elif abs(a) < tol and abs(d) < tol and abs(b) > tol and abs(c) > tol:
        o = _Orientation(True, flip_rows=b < 0, flip_cols=c < 0, rotation=rotation, mirrored=mirrored)
    else:
        warnings.append(f"display matrix rotates by {rotation} degrees (not a multiple of 90): frames kept as stored")
        return _Orientation()
    return o


@contextlib.contextmanager
def _libav_warnings(this_thread_only: bool):
    """Collect libav's log lines at WARNING or worse (``(level, name, message)`` tuples).

    PyAV ignores libav's log unless a level is set; it is set for the duration of the block and put back.
    ``this_thread_only``: with one decoder thread every message comes from the calling thread; with
    decoder threads (``threads != 1``) libav's own worker threads log too, so every thread's messages are
    captured (a shard worker decodes one clip at a time, so they are this clip's).
    """
    prev = av.logging.get_level()
    if prev is None or prev < av.logging.WARNING:
        av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture(local=this_thread_only) as logs:
            yield logs
    finally:
        av.logging.set_level(prev)


def _keep_warnings(messages: list[str]) -> list[str]:
    """The first :data:`MAX_WARNINGS` distinct messages, in order."""
    out: list[str] = []
    for msg in messages:
        if msg not in out:
            out.append(msg)
            if len(out) == MAX_WARNINGS:
                break
    return out


def decode_clip(
    path: str | Path,
    num_frames: int = 16,
    height: int = 224,
    width: int = 224,
    resize: Literal["crop", "pad"] = "crop",
    sample_rate: int = 16000,
    missing_audio: Literal["silence", "error"] = "error",
    threads: int = 1,
) -> DecodedClip:
    """Probe and decode ``path`` in one pass; see the module docstring for the output shapes.

    ``missing_audio="silence"`` keeps a clip without an audio stream, filling ``duration`` seconds of
    silence and setting ``has_audio=False``; ``"error"`` raises ``MediaError("no_audio")``.
    ``threads``: libav decoder threads per clip (1 suits one worker per core).
    """
    path = Path(path)
    size = _check_path(path)
    warnings: list[str] = []
    with contextlib.ExitStack() as stack:
        logs = stack.enter_context(_libav_warnings(threads == 1))
        container = stack.enter_context(_open(path))
        info = _probe_container(container, size)
        if not info.has_video:
            raise MediaError("no_video", f"{path.name} has no video stream ({info.container})")
        duration = info.duration_s
        if not duration or duration <= 0:  # a raw elementary stream: measure, then start over
            duration, n_packets = _duration_from_packets(container, container.streams.video[0])
            info.duration_s = duration
            info.fps = n_packets / duration
            container.close()
            container = stack.enter_context(_open(path))
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if info.has_audio else None
        vstream.codec_context.thread_count = threads  # 1: one thread per clip, one worker per core
        if threads != 1:
            vstream.thread_type = "AUTO"

        start = float(vstream.start_time * vstream.time_base) if vstream.start_time is not None else info.start_s
        step = duration / num_frames
        targets = [start + (i + 0.5) * step for i in range(num_frames)]
        fps = info.fps or 25.0

        frames: list[np.ndarray] = []
        times: list[float] = []
        chunks: list[np.ndarray] = []
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate) if astream else None
        prev = None  # (VideoFrame, time, decode index) of the previous decoded video frame
        # The last converted image, keyed by the frame's decode index: a target that picks the same
        # source frame again reuses it. (Never key by id(frame): a freed frame's id is reused by a
        # later frame, which then got the earlier frame's image.)
        last_conv: tuple[int, np.ndarray] | None = None
        orient: _Orientation | None = None  # from the first decoded frame's display matrix
        last_time = None
        n_decoded = 0

        def keep(frame, t, index):
            nonlocal last_conv
            if last_conv is None or last_conv[0] != index:
                dw, dh = orient.display_size(frame.width, frame.height)
                sw, sh = _scaled_size(dw, dh, height, width, resize)  # upright, scaled
                cw, ch = orient.display_size(sw, sh)  # the same, as stored
                img = frame.to_ndarray(width=cw, height=ch, format="rgb24", interpolation="AREA")
                last_conv = (index, resize_frame(orient.apply(img), height, width, resize))
            frames.append(last_conv[1])
            times.append(round(t, 6))

        streams = [s for s in (vstream, astream) if s is not None]
        video_done = False
        for packet in container.demux(*streams):
            is_video = packet.stream.type == "video"
            if is_video and video_done:
                continue  # every target is filled: skip decoding the rest of the video
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                warnings.append(f"{packet.stream.type} packet at {packet.pts}: {exc}")
                continue
            for frame in decoded:
                if is_video:
                    if orient is None:
                        orient = _orientation(frame, warnings)
                        info.rotation, info.mirrored = orient.rotation, orient.mirrored
                    t = float(frame.time) if frame.time is not None else start + n_decoded / fps
                    index = n_decoded
                    n_decoded += 1
                    while len(frames) < num_frames and t >= targets[len(frames)]:
                        target = targets[len(frames)]
                        if prev is not None and abs(prev[1] - target) <= abs(t - target):
                            keep(*prev)
                        else:
                            keep(frame, t, index)
                    prev, last_time = (frame, t, index), t
                    if len(frames) == num_frames:
                        video_done = True
                else:
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
        if resampler is not None:
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        if prev is not None:
            while len(frames) < num_frames and not (
                    last_time < start + duration - max(_TRUNCATION_TOLERANCE_S, 2.0 / fps)):
                keep(*prev)  # the last target(s) fall after the final frame (converted here: frame alive)
        warnings.extend(f"[{name}] {msg.strip()}" for level, name, msg in logs if level <= av.logging.WARNING)

    if prev is None:
        detail = "; ".join(warnings[:3]) or (
            f"the stream ended without a frame; the file ({size} bytes) may be cut short")
        raise MediaError("decode_error", f"no video frame of {path.name} could be decoded ({detail})")
    if len(frames) < num_frames:
        raise MediaError(
            "truncated",
            f"{path.name}: video stops at {last_time - start:.2f} s of a stated {duration:.2f} s",
        )
    if astream is None and missing_audio == "error":
        # checked after the video decoded: a damaged header that lost the audio track is not "no audio"
        raise MediaError("no_audio", f"{path.name} has no audio stream")
    if astream is not None:
        audio = np.concatenate(chunks).astype(np.int16, copy=False) if chunks else np.zeros(0, np.int16)
        has_audio = True
    else:
        audio = np.zeros(int(round(duration * sample_rate)), dtype=np.int16)
        has_audio = False
    return DecodedClip(
        frames=np.stack(frames),
        frame_times_s=times,
        audio=audio,
        sample_rate=sample_rate,
        has_audio=has_audio,
        duration_s=duration,
        video_start_s=start,
        probe=info,
        warnings=_keep_warnings(warnings),
        num_warnings=len(warnings),
    )


def _duration_from_packets(container: av.container.InputContainer, vstream) -> tuple[float, int]:
    """``(seconds, video packets)`` when the header states no duration (demux only): the end time of
    the last video packet, or, for a raw stream without timestamps, the sum of the packets' durations."""
    end = total = 0.0
    first = None
    n = 0
    for packet in container.demux(vstream):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream flush packet
        n += 1
        if packet.time_base is not None:
            total += float((packet.duration or 0) * packet.time_base)
            if packet.pts is not None:
                t = float(packet.pts * packet.time_base)
                first = t if first is None else min(first, t)
                end = max(end, t + float((packet.duration or 0) * packet.time_base))
    duration = (end - first) if first is not None else total
    if duration <= 0 or n == 0:
        raise MediaError("decode_error", "the video stream has no timestamps and the container no duration")
    return duration, n
