"""eGeMAPS through openSMILE's C API (mosear.mine.smile): the wheel's numbers, without its Python layer."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np

from mosear.mine.smile import EGeMAPSFunctionals


def test_functionals_are_bit_identical_to_the_opensmile_wheel(real_samples):
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    ours = EGeMAPSFunctionals()
    assert ours.names == list(smile.feature_names) and len(ours.names) == 88
    rng = np.random.default_rng(0)
    clips = [np.asarray(s["audio"], np.float32) for s in real_samples]
    clips += [np.ones(8000, np.float32),               # full scale: 32768 wraps to -32768 in int16, as in the wheel
              rng.normal(0, 0.3, 16000 * 12).astype(np.float32),  # longer than any sample clip
              rng.normal(0, 0.1, 300).astype(np.float32)]          # too short for a frame: NaN in both
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the wheel's "Segment too short, filling with NaN."
        for audio in clips:
            ref = np.asarray(smile(audio, 16000), np.float32).reshape(-1)
            got = ours(audio, 16000)
            assert got.dtype == np.float32 and got.tobytes() == ref.tobytes()
    assert np.isnan(got).all()  # the 300-sample clip


def test_stage_setup_imports_neither_the_opensmile_python_layer_nor_pandas(repo_root):
    # the ~0.56 s of start-up per mining actor this module exists to save
    code = ("import sys; import mosear.mine.run, mosear.mine.worker; from mosear.mine.stage_pipeline import StagePipeline; "
            "p = StagePipeline.from_spec(['signal_quality', 'audio_egemaps']); p.setup(); "
            "print(sorted(m for m in ('opensmile', 'audinterface', 'pandas', 'ray.data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
