"""Mux a counterfactual face/voice clip: the video stream of one recording with the audio of another.

The shard stage calls :func:`decode_splice` for every clip a ``splice`` source plans
(:mod:`mosear.adapters.splice`): it muxes the pair into a temporary file and decodes that with the same
decoder as every other clip, so spliced samples follow the shard contract bit for bit.

Deterministic: the temporary clip is a QuickTime file with the face's video stream copied (bit-exact
frames) and the voice as 16-bit PCM (no lossy audio encoder whose output could change with the ffmpeg
build), muxed single-threaded with ``+bitexact`` (no encoder/version tags) and no copied metadata, so
the same pair gives byte-identical samples whatever the worker count or order. (:func:`splice_clip`
writes AAC only when asked for an ``.mp4``, for a clip people will play.) ``SPLICE_FORMAT`` names this
recipe; it is part of every spliced clip's input digest, so changing the recipe rebuilds exactly the
shards holding splices.

Sync: ``offset_s`` delays the voice against the video (negative: cuts that much from its start). The
RAVDESS default, +33 ms (one frame), is measured: an audio-only take, decoded, runs 33.3 ms ahead of the
same take's audio track inside its full-AV clip (cross-correlation on actor 05's clips, also for the
48 kHz originals), so a voice delayed by 33 ms sits where the face's own take would. The voice is padded
with silence or cut to the video's length.
"""

from __future__ import annotations

import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import ffmpeg

from mosear.media.decode import DecodedClip, MediaError, decode_clip

__all__ = ["SPLICE_FORMAT", "splice_clip", "decode_splice", "ffmpeg_version"]

# What the spliced clips are made of: QuickTime, video copied, 16-bit PCM voice, bit-exact mux.
SPLICE_FORMAT = "mov-pcm16-bitexact"


def splice_clip(face: str | Path, voice: str | Path, out: str | Path, offset_s: float = 0.033) -> Path:
    """Mux the video stream of ``face`` with the audio of ``voice`` into ``out`` (one ffmpeg call).

    The video is stream-copied (bit-exact frames); the voice is delayed by ``offset_s`` seconds (cut by
    ``-offset_s`` from its start when negative), padded with silence and cut to the video's duration.
    Audio: 16-bit PCM (lossless, deterministic) unless ``out`` ends in ``.mp4``/``.m4v`` (AAC, what
    players expect there). Single-threaded, ``+bitexact``, no copied metadata: the same inputs give the
    same bytes. Raises ``ffmpeg.Error`` (with ffmpeg's stderr) when ffmpeg fails.
    """
    video = ffmpeg.input(str(face)).video
    if offset_s >= 0:
        audio = ffmpeg.input(str(voice)).audio.filter("adelay", delays=f"{offset_s * 1000:.2f}", all=1)
    else:
        audio = ffmpeg.input(str(voice), ss=f"{-offset_s:.4f}").audio
    audio = audio.filter("apad")
    mp4 = Path(out).suffix.lower() in (".mp4", ".m4v")
    extra = {"movflags": "+faststart"} if mp4 else {}
    (
        ffmpeg.output(video, audio, str(out), vcodec="copy", acodec="aac" if mp4 else "pcm_s16le", ac=1,
                      shortest=None, threads=1, map_metadata=-1, fflags="+bitexact", **{"flags:a": "+bitexact"},
                      **extra)
        .global_args("-nostdin", "-loglevel", "error")
        .overwrite_output()
        .run(capture_stdout=True, capture_stderr=True)
    )
    return Path(out)


def decode_splice(face: str | Path, voice: str | Path, offset_s: float, *, keep: bool = False,
                  **decode: Any) -> tuple[DecodedClip, bytes | None]:
    """Splice ``face`` + ``voice`` into a temporary QuickTime file and decode it (``decode``: the keyword
    arguments of :func:`mosear.media.decode.decode_clip`). Returns the decoded clip and, with ``keep``,
    the spliced file's bytes (a passthrough member). The temporary file is always removed.

    Raises :class:`MediaError`: ``missing`` when the face or the voice does not exist,
    ``splice_failed`` (ffmpeg's last stderr lines) when the mux fails, else the decoder's reasons.
    """
    for role, p in (("face", face), ("voice", voice)):
        if not Path(p).is_file():
            raise MediaError("missing", f"the {role} {p} does not exist")
    with tempfile.TemporaryDirectory(prefix="mosear-splice-") as tmp:
        out = Path(tmp) / "splice.mov"  # PCM voice: see the module docstring
        try:
            splice_clip(face, voice, out, offset_s)
        except ffmpeg.Error as exc:
            err = (exc.stderr or b"").decode(errors="replace").strip()[-500:]
            raise MediaError("splice_failed", err or "ffmpeg failed") from None
        except OSError as exc:  # ffmpeg not installed / not runnable
            raise MediaError("splice_failed", f"cannot run ffmpeg: {exc}") from None
        clip = decode_clip(out, **decode)
        return clip, (out.read_bytes() if keep else None)


@lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """The ffmpeg build that muxes the spliced clips (first line of ``ffmpeg -version``), for the stats."""
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unknown ({exc})"
    return out.splitlines()[0] if out else "unknown"
