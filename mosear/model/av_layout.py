"""Where a clip's video and audio positions go in an Omni thinker's prompt, and when each frame was taken.

Two layouts of one clip (``ModelConfig.audio_in_video``), both rendered through the checkpoint's chat
template:

- **audio in video** (default; what the model's processor does for a video with sound, transformers'
  ``load_audio_from_video`` / the authors' ``use_audio_in_video=True``): the user turn holds one video part
  and no audio part; the video placeholder becomes ``<audio_bos>`` + co-timed runs of video and audio
  positions + ``<audio_eos>`` (inside the template's ``<vision_bos> … <vision_eos>``), and the thinker is
  called with ``use_audio_in_video=True`` so its ``get_rope_index`` gives both the same TMRoPE time axis.
  The order of the runs is the processor's (``replace_video_with_audio_token``):

  - ``"chunked"`` (Qwen2.5-Omni): positions are cut into chunks of ``position_id_per_seconds ×
    seconds_per_chunk`` time steps (50 = 2 s); chunk j of the video, then chunk j of the audio;
  - ``"merged"`` (Qwen3-Omni): the two sequences merged by time (a video position first on ties).

  A video position's time is ``t · video_second_per_grid · position_id_per_seconds`` (``t`` its temporal
  grid index), an audio position's is its index (one position per ``1 / position_id_per_seconds`` s).
- **separate**: a video part, then an audio part (``<vision_bos> V… <vision_eos><audio_bos> A…
  <audio_eos>``); the rope puts every audio position after the last video position.

``position_id_per_seconds`` / ``seconds_per_chunk`` are read from the model config, because the thinker's
``get_rope_index`` replays the same order from them (the released configs and processors agree: 25 / 2 s
Qwen2.5-Omni, 13 Qwen3-Omni; transformers' Qwen3-Omni config default of 25 does not match its processor).

Frame times (:func:`seconds_per_grid`): the sample's ``meta.frame_times_s`` (what the shards record) at
the frames kept, else frames spread evenly over the audio's duration; ``video_second_per_grid`` =
``temporal_patch_size`` × the mean time between kept frames, i.e. the processor's ``temporal_patch_size /
fps`` with the fps the frames really have, so video and audio are co-timed. Without either (a single
frame, no audio) the processor's default fps is used.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["INTERLEAVE", "interleaved_runs", "seconds_per_grid", "video_times"]

INTERLEAVE = ("chunked", "merged")


def seconds_per_grid(sample: dict[str, Any], idx: Sequence[int], temporal: int, default_fps: float,
                     sample_rate: int = 16000) -> float:
    """Seconds between two temporal grids of the video made of frames ``idx`` of ``sample["frames"]``.

    ``temporal`` frames form one grid; the frame spacing is the mean over the kept frames of
    ``meta.frame_times_s`` (seconds, one per decoded frame), else of ``i · D / T`` with ``D`` the audio
    duration (``len(audio) / sample_rate``) and ``T`` the decoded frames; ``1 / default_fps`` when neither
    gives a positive spacing.
    """
    idx = [int(i) for i in idx]
    n_decoded = int(np.asarray(sample["frames"]).shape[0])
    times = (sample.get("meta") or {}).get("frame_times_s")
    if times is not None and len(times) != n_decoded:
        times = None  # not the times of these frames (e.g. a modality filler replaced them)
    if times is None:
        duration = float(np.asarray(sample.get("audio", [])).size) / sample_rate
        times = [i * duration / max(n_decoded, 1) for i in range(n_decoded)]
    spacing = (float(times[idx[-1]]) - float(times[idx[0]])) / (len(idx) - 1) if len(idx) > 1 else 0.0
    if not spacing > 0:
        spacing = 1.0 / default_fps
    return temporal * spacing


def video_times(grid: Sequence[int], merge: int, second_per_grid: torch.Tensor | float,
                position_id_per_seconds: float) -> torch.Tensor:
    """Time (in rope steps) of each video position of a ``[t, h, w]`` grid, in placeholder order:
    ``t · second_per_grid · position_id_per_seconds`` in float32, as the thinkers' ``get_rope_index``
    computes it (``[t · h/merge · w/merge]``)."""
    t, h, w = (int(v) for v in grid)
    spg = torch.as_tensor(second_per_grid, dtype=torch.float32).reshape(())
    per_grid = torch.arange(t) * spg * position_id_per_seconds
    return per_grid.repeat_interleave((h // merge) * (w // merge))


def _chunks(values: Sequence[float], size: int) -> list[tuple[int, int]]:
    """(start, end) slices of ``values`` (non-decreasing) cut where a value reaches the next multiple of
    ``size``; one cut per element, as the processor's ``get_chunked_index`` does."""
    bounds, k = [0], 1
    for i, v in enumerate(values):
        if v >= k * size:
            bounds.append(i)
            k += 1
    bounds.append(len(values))
    return list(zip(bounds[:-1], bounds[1:]))


def interleaved_runs(kind: str, video_t: torch.Tensor, n_audio: int, position_id_per_seconds: float,
                     seconds_per_chunk: float = 2.0) -> list[tuple[str, int]]:
    """The audio-in-video order of ``len(video_t)`` video and ``n_audio`` audio positions as runs
    ``[("video" | "audio", count), ...]`` (no empty runs; counts add up to the totals).

    ``kind`` ``"chunked"`` (Qwen2.5-Omni) or ``"merged"`` (Qwen3-Omni), see the module docstring;
    ``video_t`` from :func:`video_times`.
    """
    if kind not in INTERLEAVE:
        raise ValueError(f"interleave kind must be one of {INTERLEAVE}, got {kind!r}")
    runs: list[tuple[str, int]] = []

    def add(name: str, n: int) -> None:
        if n <= 0:
            return
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + n)
        else:
            runs.append((name, n))

    if kind == "chunked":
        size = int(position_id_per_seconds * seconds_per_chunk)
        vc = _chunks(video_t.long().tolist(), size)  # the rope index truncates video times to integers
        ac = _chunks(list(range(n_audio)), size)
        for j in range(max(len(vc), len(ac))):
            if j < len(vc):
                add("video", vc[j][1] - vc[j][0])
            if j < len(ac):
                add("audio", ac[j][1] - ac[j][0])
        return runs
    vt = video_t.tolist()
    i = a = 0
    while i < len(vt) and a < n_audio:
        if vt[i] <= a:
            add("video", 1)
            i += 1
        else:
            add("audio", 1)
            a += 1
    add("video", len(vt) - i)
    add("audio", n_audio - a)
    return runs
