"""Rebuild the committed sample corpus (this folder) from the raw clips in ``../shared/data``.

Usage (from the repository root)::

    python datasets/samples/make_samples.py [--src ../shared/data] [--dst datasets/samples]

What it writes (about 6 MB in all; LICENSES.md: licences and citations; PROVENANCE.tsv: for every file
its source file, the source's sha256, what was done to it, and its own sha256):

- ``ravdess/01-01-EE-II-SS-RR-AA.mp4``: 27 RAVDESS faces of 7 actors, re-encoded to 480 px wide h264
  (crf 26) with their own voice (AAC 48 kHz mono 64 kb/s); names keep the RAVDESS codes. Actor 05: 14
  clips; actors 01, 03, 06, 09, 10: the 12 clips of ``ravdess_more/av``; actor 19: the video-only face crop
  ``02-01-08-02-01-01-19`` (no audio stream) muxed with its own audio-only take ``03-01-08-02-01-01-19``
  delayed by 33 ms (what every RAVDESS audio-only take needs, docs/shard.md; the lag between the face's
  motion and the voice's loudness is printed for this clip and for a full-AV reference clip), downscaled
  to 270x270 and named ``01-...`` (full-AV) since it now is one.
- ``ravdess_audio/03-01-EE-II-SS-RR-AA.flac``: the voices the splices need, 16 kHz mono FLAC: for every
  actor and statement that has a face here, one take per emotion (8), the first in code order that is
  not itself a face here (so each face meets one same-emotion voice from another recording and seven
  conflicting ones).
- ``ravdess_sync/03-01-03-01-01-02-05.flac``: the audio-only twin of the face ``01-01-03-01-01-02-05``, 16 kHz
  FLAC, in no corpus: the reference of the splice sync test (tests/adapters/test_splice.py).
- ``crema_d/1001_DFA_{ANG,DIS,FEA,HAP,NEU,SAD}_XX.flv``: the original CREMA-D files, byte-exact;
  ``processedResults/summaryTable.csv``: CREMA-D's real ratings table (where the release keeps it, beside
  the clip folder), header and columns as released, only the rows of the clips here (1001_DFA_* and
  1002_DFA_*: 12 of 7,442 rows).
- ``crema_d_voice/1002_DFA_*_XX.mp3``: actor 1002's voice saying the same sentence, byte-exact (the
  voices of the 1001-face x 1002-voice swaps).
- ``crema_d_extra/*.mp4``: 6 CREMA-D re-encodes whose CREMA-D ids (and so speakers) are unknown, 320x240;
  kept as format fixtures for tests, in no corpus YAML (no person can be named for them).

Output is deterministic for a given ffmpeg build (bitexact flags, no metadata).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
from pathlib import Path

import ffmpeg
import numpy as np

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
CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
BITEXACT = {"fflags": "+bitexact", "flags:v": "+bitexact", "flags:a": "+bitexact", "map_metadata": -1}
LICENCE = {"ravdess": "CC BY-NC-SA 4.0", "crema_d": "ODbL 1.0 / DbCL 1.0"}
VOICE_DELAY_S = 0.033  # an audio-only RAVDESS take runs one frame ahead of its full-AV twin (docs/shard.md)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


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


def _mux_face_voice(face: Path, voice: Path, dst: Path, width: int, delay_s: float) -> None:
    """A video-only face + its own audio-only take -> one h264/AAC clip, the voice delayed by ``delay_s``
    and cut to the video's length."""
    duration = float(ffmpeg.probe(str(face))["streams"][0]["duration"])
    video = ffmpeg.input(str(face)).video.filter("scale", width, -2)
    audio = ffmpeg.input(str(voice)).audio.filter("adelay", delays=f"{delay_s * 1000:.2f}", all=1).filter("apad")
    out = ffmpeg.output(video, audio, str(dst), vcodec="libx264", crf=26, preset="slow", pix_fmt="yuv420p",
                        threads=1, acodec="aac", audio_bitrate="64k", ac=1, ar=48000, t=f"{duration:.3f}",
                        movflags="+faststart", **BITEXACT)
    out.overwrite_output().run(quiet=True)


def _encode_flac(src: Path, dst: Path) -> None:
    """Audio-only take -> 16 kHz mono 16-bit FLAC."""
    out = ffmpeg.output(
        ffmpeg.input(str(src)).audio, str(dst),
        acodec="flac", ac=1, ar=16000, sample_fmt="s16", **BITEXACT,
    )
    out.overwrite_output().run(quiet=True)


def motion_voice_lag(video: Path, audio: Path | None = None, max_lag: int = 6) -> tuple[int, float]:
    """Frames by which the voice's loudness trails the face's motion (best cross-correlation of the
    frame-difference energy with the per-frame RMS of ``audio``, or of the video's own audio track) and
    that correlation. A coarse sync check (one frame = 33 ms), not a measurement."""
    import av

    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="gray").astype(np.float32) for f in c.decode(video=0)]
        fps = float(c.streams.video[0].average_rate)
    motion = np.array([np.abs(b - a).mean() for a, b in zip(frames, frames[1:])])
    with av.open(str(audio or video)) as c:
        pcm = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
        rate = c.streams.audio[0].rate
    hop = rate / fps
    rms = np.array([np.sqrt(np.mean(pcm[int(i * hop):int((i + 1) * hop)] ** 2) + 1e-12) for i in range(len(frames))])
    env = np.abs(np.diff(rms))[: len(motion)]
    m = (motion - motion.mean()) / (motion.std() + 1e-9)
    e = (env - env.mean()) / (env.std() + 1e-9)
    n = min(len(m), len(e))
    best = max(range(-max_lag, max_lag + 1),
               key=lambda k: float(np.mean(m[max(0, -k):n - max(0, k)] * e[max(0, k):n - max(0, -k)])))
    k = best
    return k, float(np.mean(m[max(0, -k):n - max(0, k)] * e[max(0, k):n - max(0, -k)]))


def _codes(name: str) -> list[str]:
    return Path(name).stem.split("-")


def _voice_takes(faces: list[str], takes: list[Path]) -> list[Path]:
    """For each (actor, statement) with a face: one take per emotion, the first in code order that is
    not itself a face's take."""
    face_takes = {"-".join(_codes(f)[2:]) for f in faces}
    wanted = {(_codes(f)[6], _codes(f)[4]) for f in faces}
    chosen: dict[tuple[str, str, str], Path] = {}
    for t in sorted(takes, key=lambda p: p.name):
        c = _codes(t.name)
        actor, stmt, emo = c[6], c[4], c[2]
        if (actor, stmt) in wanted and "-".join(c[2:]) not in face_takes:
            chosen.setdefault((actor, stmt, emo), t)
    return [chosen[k] for k in sorted(chosen)]


def build(src: Path, dst: Path) -> None:
    rav05, more, crema_src = src / "ravdess_actor05", src / "ravdess_more", src / "crema_d"
    for sub in ("ravdess", "ravdess_audio", "ravdess_sync", "crema_d", "crema_d_voice", "crema_d_extra"):
        shutil.rmtree(dst / sub, ignore_errors=True)
        (dst / sub).mkdir(parents=True)
    shutil.rmtree(dst / "processedResults", ignore_errors=True)
    (dst / "processedResults").mkdir()
    prov: list[dict[str, str]] = []

    def record(out: Path, source: Path, conversion: str, dataset: str) -> None:
        prov.append({"file": out.relative_to(dst).as_posix(), "source": source.relative_to(src).as_posix(),
                     "source_sha256": _sha(source), "conversion": conversion, "sha256": _sha(out),
                     "licence": LICENCE[dataset]})

    av_clips = sorted(rav05.glob("01-*.mp4")) + sorted((more / "av").glob("01-*.mp4"))
    if len(av_clips) != 26:
        raise SystemExit(f"expected 14 + 12 RAVDESS full-AV clips in {rav05} and {more / 'av'}, found {len(av_clips)}")
    for clip in av_clips:
        out = dst / "ravdess" / clip.name
        _encode_av(clip, out, width=480, crf=26, audio_rate=48000)
        record(out, clip, "h264 480 px wide crf 26, AAC 48 kHz mono 64 kb/s", "ravdess")
    face19 = more / "video_only" / "02-01-08-02-01-01-19.mp4"
    voice19 = more / "audio" / "Actor_19" / "03-01-08-02-01-01-19.flac"
    ref = more / "av" / "01-01-08-01-01-01-09.mp4"
    print(f"sync check: {ref.name} with its own track: voice trails motion by {motion_voice_lag(ref)} (frames, r)")
    print(f"sync check: {face19.name} with {voice19.name}: {motion_voice_lag(face19, voice19)} (frames, r)")
    out19 = dst / "ravdess" / "01-01-08-02-01-01-19.mp4"
    _mux_face_voice(face19, voice19, out19, width=270, delay_s=VOICE_DELAY_S)
    record(out19, face19, f"video-only face muxed with its own audio-only take {voice19.name} delayed "
           f"{VOICE_DELAY_S * 1000:.0f} ms and cut to the video; h264 270x270 crf 26, AAC 48 kHz mono; renamed 01- "
           "(full-AV)", "ravdess")

    faces = [p.name for p in sorted((dst / "ravdess").glob("*.mp4"))]
    takes = sorted(rav05.glob("03-*.wav")) + sorted((more / "audio").rglob("03-*.flac"))
    for take in _voice_takes(faces, takes):
        out = dst / "ravdess_audio" / (take.stem + ".flac")
        _encode_flac(take, out)
        record(out, take, "16 kHz mono 16-bit FLAC", "ravdess")

    twin = rav05 / "03-01-03-01-01-02-05.wav"  # the audio-only twin of a face: the splice sync test's reference
    _encode_flac(twin, dst / "ravdess_sync" / "03-01-03-01-01-02-05.flac")
    record(dst / "ravdess_sync" / "03-01-03-01-01-02-05.flac", twin, "16 kHz mono 16-bit FLAC", "ravdess")

    for emo in CREMA_EMOTIONS:
        name = f"1001_DFA_{emo}_XX"
        source = crema_src / ("prova_3__1001_DFA_ANG_XX.flv" if emo == "ANG" else f"{name}.flv")
        out = dst / "crema_d" / f"{name}.flv"
        shutil.copyfile(source, out)
        record(out, source, "byte-exact copy" + (", renamed to its CREMA-D id" if emo == "ANG" else ""), "crema_d")
        voice = crema_src / "voice_only" / f"1002_DFA_{emo}_XX.mp3"
        out = dst / "crema_d_voice" / voice.name
        shutil.copyfile(voice, out)
        record(out, voice, "byte-exact copy", "crema_d")
    table = crema_src / "ratings" / "summaryTable.csv"
    lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [ln for ln in lines[1:] if ln.split(",")[1].strip('"').startswith(("1001_DFA_", "1002_DFA_"))]
    out = dst / "processedResults" / "summaryTable.csv"  # CREMA-D's layout: the adapter looks beside its root
    out.write_text(lines[0] + "".join(keep), encoding="utf-8")
    record(out, table, f"the header and the {len(keep)} rows of 1001_DFA_* and 1002_DFA_* (of {len(lines) - 1}), "
           "bytes unchanged", "crema_d")

    rows = []
    for stem, label in CREMA_EXTRA_LABELS.items():
        source = crema_src / f"{stem}.mp4"
        out = dst / "crema_d_extra" / f"{stem}.mp4"
        _encode_av(source, out, width=320, audio_rate=44100)
        record(out, source, "h264 320x240 crf 28, AAC 44.1 kHz mono 64 kb/s", "crema_d")
        rows.append({"path": f"{stem}.mp4", "label": label, "split": "train", "speaker": "", "transcript": ""})
    with open(dst / "crema_d_extra" / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    with open(dst / "PROVENANCE.tsv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(prov[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(prov, key=lambda r: r["file"]))
    total = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    print(f"wrote {dst}: {len(prov)} files, {total / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--dst", type=Path, default=HERE)
    args = parser.parse_args()
    build(args.src.resolve(), args.dst.resolve())


if __name__ == "__main__":
    main()
