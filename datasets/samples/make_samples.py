"""Rebuild the committed sample corpus (this folder) from the raw clips in ``../shared/data``.

Usage (from the repository root)::

    python datasets/samples/make_samples.py [--src ../shared/data] [--dst datasets/samples]

What it writes (about 4 MB in all; see LICENSES.md for the licences and citations):

- ``ravdess/01-01-EE-II-SS-RR-05.mp4``: the 14 RAVDESS actor-05 audio-visual clips, re-encoded to
  480x270 h264 (crf 26) with the audio kept (AAC 48 kHz mono 64 kb/s); names keep the RAVDESS codes.
- ``ravdess_audio/03-01-EE-II-SS-RR-05.flac``: all 60 RAVDESS actor-05 audio-only takes as 16 kHz mono
  FLAC (the mining stage splices a face of one emotion with a voice of another from these).
- ``crema_d/1001_DFA_ANG_XX.flv``: the original CREMA-D file (FLV, VP6 video, MP3 audio), byte-exact,
  renamed to its CREMA-D id.
- ``crema_d_extra/*.mp4``: the 6 CREMA-D h264 re-encodes whose CREMA-D ids are unknown, downscaled to
  320x240; their labels (first word of the name, unverified) are in ``crema_d_extra/manifest.csv``.

Output is deterministic for a given ffmpeg build (bitexact flags, no metadata).
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import ffmpeg

HERE = Path(__file__).resolve().parent

# Name of each CREMA-D re-encode -> the label its source repository gave it (unverified).
CREMA_EXTRA_LABELS = {
    "angry_wrong": "angry",
    "angry_wrong_1": "angry",
    "disgusted_wrong": "disgust",
    "happy_wrong": "happy",
    "happy_wrong_2": "happy",
    "sad_correct": "sad",
}
BITEXACT = {"fflags": "+bitexact", "flags:v": "+bitexact", "flags:a": "+bitexact", "map_metadata": -1}


def _encode_av(src: Path, dst: Path, width: int, audio_rate: int, crf: int = 28) -> None:
    """Downscale ``src`` to ``width`` px (height even, aspect kept) as h264 + AAC mono."""
    stream = ffmpeg.input(str(src))
    out = ffmpeg.output(
        stream.video.filter("scale", width, -2),
        stream.audio,
        str(dst),
        vcodec="libx264", crf=crf, preset="slow", pix_fmt="yuv420p", threads=1,
        acodec="aac", audio_bitrate="64k", ac=1, ar=audio_rate,
        movflags="+faststart", **BITEXACT,
    )
    out.overwrite_output().run(quiet=True)


def _encode_flac(src: Path, dst: Path) -> None:
    """Audio-only take -> 16 kHz mono 16-bit FLAC."""
    out = ffmpeg.output(
        ffmpeg.input(str(src)).audio, str(dst),
        acodec="flac", ac=1, ar=16000, sample_fmt="s16", **BITEXACT,
    )
    out.overwrite_output().run(quiet=True)


def build(src: Path, dst: Path) -> None:
    rav_src = src / "ravdess_actor05"
    crema_src = src / "crema_d"
    for sub in ("ravdess", "ravdess_audio", "crema_d", "crema_d_extra"):
        (dst / sub).mkdir(parents=True, exist_ok=True)

    av_clips = sorted(rav_src.glob("01-*.mp4"))
    takes = sorted(rav_src.glob("03-*.wav"))
    if len(av_clips) != 14 or len(takes) != 60:
        raise SystemExit(f"{rav_src}: expected 14 AV clips and 60 audio takes, found {len(av_clips)}, {len(takes)}")
    for clip in av_clips:
        _encode_av(clip, dst / "ravdess" / clip.name, width=480, crf=26, audio_rate=48000)
    for take in takes:
        _encode_flac(take, dst / "ravdess_audio" / (take.stem + ".flac"))

    shutil.copyfile(crema_src / "prova_3__1001_DFA_ANG_XX.flv", dst / "crema_d" / "1001_DFA_ANG_XX.flv")
    rows = []
    for stem, label in CREMA_EXTRA_LABELS.items():
        _encode_av(crema_src / f"{stem}.mp4", dst / "crema_d_extra" / f"{stem}.mp4", width=320, audio_rate=44100)
        rows.append({"path": f"{stem}.mp4", "label": label, "split": "train", "speaker": "", "transcript": ""})
    with open(dst / "crema_d_extra" / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    total = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    print(f"wrote {dst}: {total / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--dst", type=Path, default=HERE)
    args = parser.parse_args()
    build(args.src, args.dst)


if __name__ == "__main__":
    main()
