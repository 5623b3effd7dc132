"""Built-in evidence stages on real clips, and on the bad inputs they must survive."""

from __future__ import annotations

import numpy as np
import pytest

from mosear.labels import CANONICAL_LABELS
from mosear.mine.stage_pipeline import StagePipeline
from mosear.mine.stages.audio import EGEMAPS_DIM
from mosear.mine.stages.text import TEXT_DIM
from mosear.mine.stages.visual import VISUAL_DIM


@pytest.fixture(scope="module")
def evidence_pipe():
    return StagePipeline.from_spec(["signal_quality", "audio_egemaps", "visual_fer", "text_lexicon"])


def test_real_clips_give_audio_visual_and_text_evidence(evidence_pipe, real_samples):
    kept, audit = evidence_pipe.run_batch([dict(s) for s in real_samples])
    assert audit == [] and len(kept) == len(real_samples)
    for s in kept:
        assert s["audio_feats"].shape == (EGEMAPS_DIM,) and np.isfinite(s["audio_feats"]).all(), s["key"]
        # semitones above 27.5 Hz: a human voice, or 0 where openSMILE found no voiced frame (CREMA-D 1001's
        # quiet, creaky SAD take is one: a real property of that clip, kept)
        assert s["audio_desc"]["pitch_st"] == 0 or 10 < s["audio_desc"]["pitch_st"] < 70, s["key"]
        assert s["face_found"], f"no face found in real clip {s['key']}"
        assert s["visual_feats"].shape == (VISUAL_DIM,) and np.isfinite(s["visual_feats"]).all()
        assert s["visual_expr"].shape == (len(CANONICAL_LABELS),)
        assert abs(float(s["visual_expr"].sum()) - 1.0) < 1e-3  # FER softmax mapped into the canonical space
        assert s["text_feats"].shape == (TEXT_DIM,)
    assert sum(s["audio_desc"]["pitch_st"] > 10 for s in kept) >= len(kept) - 1  # at most one unvoiced clip
    assert all(0 <= s["visual_desc"]["intensity"] <= 1 for s in kept)
    with_text = [s for s in kept if s["meta"].get("transcript")]
    assert with_text and all(np.isfinite(s["text_feats"]).all() for s in with_text)
    assert all(np.isnan(s["text_feats"]).all() for s in kept if not s["meta"].get("transcript"))


def test_black_frames_and_silent_or_empty_audio_are_evidence_not_errors(evidence_pipe, real_samples):
    base = real_samples[-1]
    black = dict(base, key="black", frames=np.zeros_like(base["frames"]))
    silent = dict(base, key="silent", audio=np.zeros_like(base["audio"]))
    empty = dict(base, key="empty_audio", audio=np.zeros(0, np.float32))
    kept, audit = evidence_pipe.run_batch([black, silent, empty])
    assert audit == []
    by = {s["key"]: s for s in kept}
    assert by["black"]["frames_black"] and not by["black"]["face_found"]
    assert np.isnan(by["black"]["visual_expr"]).all() and by["black"]["visual_feats"][21] == 0.0
    assert np.isfinite(by["black"]["audio_feats"]).all()  # the voice is still there
    for k in ("silent", "empty_audio"):
        assert by[k]["audio_silent"] and np.isnan(by[k]["audio_feats"]).all() and by[k]["audio_desc"]["silent"]
        assert by[k]["face_found"]


@pytest.mark.parametrize("modality", ["audio", "visual"])
def test_hf_classifier_stage_runs_local_models(tiny_models, real_samples, modality):
    pipe = StagePipeline.from_spec([{"stage": "hf_classifier", "params": {
        "model_path": str(tiny_models / modality), "modality": modality, "num_frames": 2}}])
    kept, audit = pipe.run_batch([dict(s) for s in real_samples[:3]])
    assert audit == [] and len(kept) == 3
    for s in kept:
        p = s[f"hf_{modality}_probs"]
        assert p.shape == (len(CANONICAL_LABELS),) and abs(float(p.sum()) - 1) < 1e-4
        support = {CANONICAL_LABELS[i] for i in np.flatnonzero(p)}
        assert support <= {"angry", "happy", "sad"} and support  # "other" left out, rest renormalised
    assert pipe.stages[0].device == "cpu"


def _hf_audio(tiny_models):
    return StagePipeline.from_spec([{"stage": "hf_classifier", "params": {
        "model_path": str(tiny_models / "audio"), "modality": "audio"}}])


def test_hf_audio_scores_no_missing_audio_and_respects_the_sample_rate(tiny_models, real_samples):
    """A clip without an audio stream (silence stored in its place) is not scored; audio at 48 kHz is
    resampled to the model's 16 kHz; a clip's probabilities do not depend on its batch-mates."""
    from scipy.signal import resample_poly

    pipe = _hf_audio(tiny_models)
    a, b = dict(real_samples[0]), dict(real_samples[1])
    no_audio = dict(a, key="no_audio", audio=np.zeros_like(a["audio"]), meta=dict(a["meta"], has_audio=False))
    hi = dict(a, key="hi_rate", audio=resample_poly(a["audio"], 3, 1).astype(np.float32), sample_rate=48000)
    kept, audit = pipe.run_batch([dict(a), no_audio, hi])
    assert audit == []
    by = {s["key"]: s for s in kept}
    assert np.isnan(by["no_audio"]["hf_audio_probs"]).all()
    assert by["no_audio"]["hf_audio_probs_missing"] == "no_audio_stream"
    assert by[a["key"]]["hf_audio_probs_missing"] is None
    same_clip = np.abs(by["hi_rate"]["hf_audio_probs"] - by[a["key"]]["hf_audio_probs"]).max()
    (alone_b,), _ = pipe.run_batch([dict(b)])
    other_clip = np.abs(alone_b["hf_audio_probs"] - by[a["key"]]["hf_audio_probs"]).max()
    assert same_clip < 0.2 * other_clip, (same_clip, other_clip)
    # batch-mates: a alone, and a batched with a longer clip, give the same probabilities
    longer = dict(b, key="longer", audio=np.concatenate([b["audio"], b["audio"]]))
    (alone,), _ = pipe.run_batch([dict(a)])
    together, _ = pipe.run_batch([dict(a), longer])
    np.testing.assert_array_equal(alone["hf_audio_probs"], together[0]["hf_audio_probs"])


def test_egemaps_names_why_audio_is_missing(evidence_pipe, real_samples):
    base = real_samples[0]
    no_audio = dict(base, key="no_audio", audio=np.zeros_like(base["audio"]), meta=dict(base["meta"], has_audio=False))
    (s,), audit = StagePipeline.from_spec(["audio_egemaps"]).run_batch([no_audio])
    assert audit == [] and np.isnan(s["audio_feats"]).all()
    assert s["audio_desc"] == {"silent": True, "missing": "no_audio_stream"}


def test_egemaps_stage_equals_opensmile_process_signal(real_samples):
    # the stage calls openSMILE's C API itself (mosear.mine.smile); its numbers must be process_signal's, column for column
    import opensmile

    from mosear.mine.stages.audio import _DESC, EGeMAPSEvidence

    stage = EGeMAPSEvidence()
    stage.setup()
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    for s in real_samples[:3]:
        audio = np.asarray(s["audio"], np.float32)
        row = smile.process_signal(audio, s["sample_rate"]).iloc[0]
        out = stage.process({"audio": audio, "sample_rate": s["sample_rate"], "audio_silent": False})
        assert list(row.index) == stage.columns
        assert np.array_equal(out["audio_feats"], row.to_numpy(np.float32))
        assert out["audio_desc"] == {k: float(row[c]) for k, c in _DESC.items()}
