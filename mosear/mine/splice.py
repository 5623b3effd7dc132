"""Counterfactual face/voice conflict clips from a corpus where one speaker says the same sentence with
different emotions (RAVDESS).

A pair is a full-AV clip (the *face*: its video stream, copied bit for bit) and an audio-only take (the
*voice*) of the same actor and statement from another recording. When their emotions differ the clip is
a conflict with exact per-modality truth; pairs of the same emotion (another take) are spliced-but-
consistent clips, which give the consistent subset an exact truth too.

Sync: ``offset_s`` delays the voice relative to the video (negative: cuts that much from its start).
The default, +33 ms (one frame), is measured: a RAVDESS audio-only take, decoded, runs 33.3 ms ahead of
the same take's audio track inside its full-AV clip (cross-correlation on actor 05's clips, also for
the 48 kHz originals in ../shared/data), so a voice delayed by 33 ms sits where the face's own take
would. The voice is padded with silence or cut to the video's length. The mux is one ffmpeg call (ffmpeg-python); the spliced clip is
then decoded by the shard stage's decoder and written with its :class:`ShardWriter`, so the spliced
shards follow the shard contract, with ``extra.origin = "spliced"``, ``extra.face_label``,
``extra.voice_label``, ``extra.face_take``, ``extra.voice_take`` and ``extra.offset_s`` in the metadata.

Deterministic: the spliced clip the shard stage decodes is a QuickTime file with the face's video
stream copied and the voice as 16-bit PCM (no lossy audio encoder whose output could change with the
ffmpeg build), muxed single-threaded with ``+bitexact`` (no encoder/version tags) and no copied
metadata; so the same pairs give byte-identical spliced shards whatever the worker count or order.
(:func:`splice_clip` writes AAC only when asked for an ``.mp4``, for a clip people will play.)
"""

from __future__ import annotations

import hashlib
import logging
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import ffmpeg

from mosear.adapters.base import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from mosear.adapters.ravdess import STATEMENT, parse_ravdess_name
from mosear.labels import canonical_label

log = logging.getLogger(__name__)

# What the spliced clips are made of; part of the spliced shards' config hash, so a change here never
# reuses shards made the old way. "mov-pcm16-bitexact": QuickTime, video copied, 16-bit PCM voice.
SPLICE_FORMAT = "mov-pcm16-bitexact"

_AUDIO_EXT = set(AUDIO_EXTENSIONS)
_VIDEO_EXT = set(VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class Take:
    path: Path
    take: str  # "EE-II-SS-RR-AA": emotion, intensity, statement, repetition, actor
    label: str
    statement: str
    actor: str


@dataclass(frozen=True)
class SplicePair:
    face: Take
    voice: Take

    @property
    def key(self) -> str:
        return f"ravdess__splice_f{self.face.take}_v{self.voice.take}"

    @property
    def conflict(self) -> bool:
        return self.face.label != self.voice.label


def _takes(folder: Path, modality: str, exts: set[str]) -> list[Take]:
    out = []
    for p in sorted(Path(folder).iterdir()):
        codes = parse_ravdess_name(p.stem) if p.suffix.lower() in exts else None
        if codes is None or codes["modality"] != modality or codes["channel"] != "speech":
            continue
        parts = p.stem.split("-")
        label = canonical_label(codes["emotion"]) or codes["emotion"]
        out.append(Take(p, "-".join(parts[2:]), label, codes["statement"], codes["actor"]))
    return out


def plan_pairs(faces: str | Path, voices: str | Path, include_consistent: bool = True,
               max_pairs: int | None = None, seed: int = 0) -> list[SplicePair]:
    """Every (face clip, voice take) of the same actor and statement from different recordings.

    With ``max_pairs``, pairs are taken round-robin over face clips after a seeded shuffle, so a small
    plan still covers every face and many emotion combinations. The order is deterministic.
    """
    face_takes = _takes(Path(faces), "full-AV", _VIDEO_EXT)
    voice_takes = _takes(Path(voices), "audio-only", _AUDIO_EXT)
    if not face_takes:
        raise FileNotFoundError(f"no RAVDESS full-AV speech clips (01-01-...) in {faces}")
    if not voice_takes:
        raise FileNotFoundError(f"no RAVDESS audio-only speech takes (03-01-...) in {voices}")
    per_face: list[list[SplicePair]] = []
    for f in face_takes:
        pairs = [SplicePair(f, v) for v in voice_takes
                 if v.actor == f.actor and v.statement == f.statement and v.take != f.take
                 and (include_consistent or v.label != f.label)]
        random.Random(f"{seed}:{f.take}").shuffle(pairs)
        per_face.append(pairs)
    ordered: list[SplicePair] = []
    while any(per_face):
        for pairs in per_face:
            if pairs:
                ordered.append(pairs.pop())
    return ordered[:max_pairs] if max_pairs else ordered


def splice_clip(face: str | Path, voice: str | Path, out: str | Path, offset_s: float = 0.033) -> Path:
    """Mux the video stream of ``face`` with the audio of ``voice`` into ``out``.

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


def ffmpeg_version() -> str:
    """The ffmpeg build that muxes the spliced clips (first line of ``ffmpeg -version``), for the stats."""
    import subprocess

    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unknown ({exc})"
    return out.splitlines()[0] if out else "unknown"


def spliced_label(pair: SplicePair, rule: str, seed: int = 0) -> str:
    """The clip's true label: the face's, the voice's, or (``alternate``) one of them by key hash."""
    if rule == "face" or not pair.conflict:
        return pair.face.label
    if rule == "voice":
        return pair.voice.label
    h = int(hashlib.sha256(f"{seed}:{pair.key}".encode()).hexdigest(), 16)
    return pair.face.label if h % 2 == 0 else pair.voice.label


def spliced_meta(pair: SplicePair, label: str, clip: Any, offset_s: float) -> dict[str, Any]:
    return {
        "key": pair.key, "dataset": "ravdess", "clip_id": pair.key.split("__", 1)[1], "split": "train",
        "label": label, "orig_label": None, "speaker": f"ravdess_{pair.face.actor}",
        "transcript": STATEMENT[pair.face.statement],
        "source": f"{pair.face.path.name} + {pair.voice.path.name}",
        "duration_s": clip.duration_s, "fps": clip.probe.fps, "width": clip.probe.width,
        "height": clip.probe.height, "num_frames": int(clip.frames.shape[0]),
        "frame_times_s": list(clip.frame_times_s), "has_audio": clip.has_audio,
        "sample_rate": clip.sample_rate, "rotation": clip.probe.rotation, "mirrored": clip.probe.mirrored,
        "num_warnings": clip.num_warnings, "warnings": clip.warnings,
        "extra": {"origin": "spliced", "face_label": pair.face.label, "voice_label": pair.voice.label,
                  "face_take": f"ravdess:{pair.face.take}", "voice_take": f"ravdess:{pair.voice.take}",
                  "face_source": pair.face.path.name, "voice_source": pair.voice.path.name,
                  "offset_s": offset_s, "conflict": pair.conflict},
    }


def _chunks(items: list[SplicePair], n: int) -> Iterator[tuple[int, list[SplicePair]]]:
    for i in range(0, len(items), n):
        yield i // n, items[i:i + n]


def write_spliced_shards(pairs: list[SplicePair], out_dir: str | Path, *, offset_s: float, label_rule: str,
                         seed: int, clips_per_shard: int, decode: dict[str, Any], config_hash: str,
                         progress: bool = True,
                         inputs_digest: Callable[[list[SplicePair]], str] | None = None) -> dict[str, int]:
    """Splice, decode and write ``pairs`` as shards ``spliced-NNNNNN.tar`` in ``out_dir``.

    Resumable: a shard whose stats JSON exists with ``config_hash`` and the same ``inputs_digest(chunk)``
    (the content digest of its faces and voices, recorded in the stats) is skipped. A pair that fails
    (ffmpeg or decode error) is recorded with ``ShardWriter.fail`` (it lands in the shard index) and the
    rest go on. ``decode``: keyword arguments for :func:`mosear.media.decode.decode_clip`.
    """
    from tqdm import tqdm

    from mosear.media.decode import MediaError, decode_clip
    from mosear.shards.reader import read_stats
    from mosear.shards.writer import ShardSample, ShardWriter, shard_name

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"written": 0, "failed": 0, "skipped_shards": 0}
    bar = tqdm(total=len(pairs), desc="splice", unit="clip", disable=not progress)
    made_by = {"origin": "spliced", "splice_format": SPLICE_FORMAT, "ffmpeg": ffmpeg_version()}
    with tempfile.TemporaryDirectory(prefix="mosear-splice-") as tmp:
        for index, chunk in _chunks(pairs, clips_per_shard):
            name = shard_name("spliced", index)
            st = read_stats(out_dir / f"{name}.tar")
            digest = inputs_digest(chunk) if inputs_digest else None
            if st is not None and st.get("config_hash") == config_hash and st.get("inputs_digest") == digest:
                counts["skipped_shards"] += 1
                bar.update(len(chunk))
                continue
            extra = {**made_by, "inputs_digest": digest}
            with ShardWriter(out_dir, "spliced", index, config_hash, extra_stats=extra) as w:
                for pair in chunk:
                    spliced = Path(tmp) / f"{pair.key}.mov"  # PCM voice: see the module docstring
                    label = spliced_label(pair, label_rule, seed)
                    try:
                        splice_clip(pair.face.path, pair.voice.path, spliced, offset_s)
                        clip = decode_clip(spliced, **decode)
                    except (ffmpeg.Error, MediaError, OSError) as exc:
                        err = exc.stderr.decode(errors="replace")[-500:] if isinstance(exc, ffmpeg.Error) else str(exc)
                        w.fail(pair.key, "splice_failed", err or type(exc).__name__)
                        counts["failed"] += 1
                    else:
                        w.write(ShardSample(pair.key, clip.frames, clip.audio, clip.sample_rate,
                                            spliced_meta(pair, label, clip, offset_s)))
                        counts["written"] += 1
                    finally:
                        spliced.unlink(missing_ok=True)
                    bar.update(1)
    bar.close()
    # A smaller plan than an earlier run's leaves no stale spliced shards behind.
    n_shards = -(-len(pairs) // clips_per_shard)
    for stats in out_dir.glob("spliced-*.stats.json"):
        if int(stats.name.split("-")[1].split(".")[0]) >= n_shards:
            stats.unlink()  # the commit marker first: a half-removed shard is never listed
            for ext in (".tar", ".index.parquet"):
                stats.with_name(stats.name.replace(".stats.json", ext)).unlink(missing_ok=True)
    return counts
