"""Shared test set-up.

What each invocation runs:
- ``pytest``                 everything that runs on CPU (the CI command in README.md); GPU tests skip.
- ``pytest -m "not slow"``   the quick subset (< ~5 min on 2 cores).
- ``pytest -m gpu``          tests that need CUDA (run on a GPU machine).

Tests use the real media in ``datasets/samples`` (built from ../shared/data, see its LICENSES.md)
and real Ray / Prefect / ffmpeg; nothing in the main path is mocked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports ray / transformers / prefect.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "datasets" / "samples"
# The raw clips beside the checkout (../shared/data). Tests that need the originals (the FLV/VP6
# clip, full-resolution RAVDESS) skip with a clear reason when the folder is absent.
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip("datasets/samples is missing")
    return SAMPLES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} (../shared/data) is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole test session (starting Ray costs seconds)."""
    from mosear.ray_utils import init_ray

    ray = init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: GPU tests cannot run either
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
