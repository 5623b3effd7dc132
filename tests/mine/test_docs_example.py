"""The "write a mining stage" guide in docs/mining.md: its example runs, and is found by entry point."""

from __future__ import annotations

import re
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest

from mosear.mine.pipeline import ENTRY_POINT_GROUP, StagePipeline, available_stages


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


@pytest.fixture
def installed_example(repo_root, tmp_path, monkeypatch):
    """Install the guide's example as a third-party distribution would be (module + dist-info)."""
    doc = (repo_root / "docs" / "mining.md").read_text()
    code = next(b for b in _blocks(doc, "python") if "class SpeechActivity" in b)
    assert len(code.strip().splitlines()) <= 30, "the guide promises a short example"
    toml = next(b for b in _blocks(doc, "toml") if ENTRY_POINT_GROUP in b)
    name, value = re.search(r'^(\w+)\s*=\s*"([^"]+)"', toml, flags=re.M).groups()
    (tmp_path / "my_stages.py").write_text(code)
    dist = tmp_path / "my_stages-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-stages\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {value}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop("my_stages", None)


def test_guide_example_is_discovered_and_runs_on_real_clips(installed_example, real_samples, repo_root):
    assert installed_example in {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert available_stages()[installed_example] == "my_stages:SpeechActivity"
    doc = (repo_root / "docs" / "mining.md").read_text()
    import yaml

    spec = yaml.safe_load(next(b for b in _blocks(doc, "yaml") if installed_example in b))["stages"]
    spec = [s for s in spec if (s if isinstance(s, str) else s["stage"]) in
            ("require_label", "signal_quality", installed_example)]
    pipe = StagePipeline.from_spec(spec)
    silent = dict(real_samples[0], key="silent_copy", audio=np.zeros_like(real_samples[0]["audio"]))
    kept, audit = pipe.run_batch([dict(s) for s in real_samples] + [silent])
    assert len(kept) + len(audit) == len(real_samples) + 1  # every input accounted for
    assert len(kept) >= len(real_samples) // 2  # real speech mostly passes the 20 % bar
    assert all(0.2 <= s["speech_share"] <= 1.0 for s in kept)
    assert ("silent_copy", "speech_activity", "too_little_speech") in [(a["key"], a["stage"], a["reason"]) for a in audit]
    assert pipe.stats["speech_activity"].dropped == {"too_little_speech": len(audit)}
