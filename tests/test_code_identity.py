"""Identity covers code: a fixed bug invalidates what the buggy code cached (issue 22, item 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import mosear
from mosear.identity import changed, code_fingerprint


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "mosear"
    shutil.copytree(Path(mosear.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_code_fingerprint_follows_the_modules_a_stage_runs(tmp_path):
    """Catches: a code identity that ignores the source (only ``__version__``, mutation: return a
    constant), one that misses modules reached through function-level or ``from pkg import mod`` imports
    (``media/decode.py`` is imported inside ``build_shard``), or data files beside them
    (``synonyms.tsv``); and one so coarse that editing the report invalidates every shard."""
    root = _copy(tmp_path)

    def fp(module: str) -> str:
        code_fingerprint.cache_clear()
        return code_fingerprint(module, root)["digest"]

    shard0, eval0 = fp("mosear.shards.run"), fp("mosear.evaluate.runner")
    assert fp("mosear.shards.run") == shard0  # deterministic
    decode = root / "media" / "decode.py"
    decode.write_text(decode.read_text() + "\n# a fixed bug\n")
    shard1 = fp("mosear.shards.run")
    assert shard1 != shard0, "an edit to the decoder must change the shard stage's code identity"
    report = root / "evaluate" / "report.py"
    report.write_text(report.read_text() + "\n# a report tweak\n")
    assert fp("mosear.shards.run") == shard1, "the shard stage never imports the report"
    syn = root / "evaluate" / "synonyms.tsv"
    syn.write_text(syn.read_text() + "\n")
    assert fp("mosear.evaluate.runner") != eval0
    code_fingerprint.cache_clear()


def test_stage_identity_records_the_code_and_says_so(tmp_path):
    """Catches: ``stage_identity`` without the ``code`` entry (a marker then matches across a bug fix),
    and ``changed`` not naming it (the user sees no reason for the recompute)."""
    from mosear.identity import identity_digest

    old = {"stage": "shard", "version": "0.1.0", "code": "a" * 64, "config": "c", "inputs": {}}
    new = dict(old, code="b" * 64)
    assert identity_digest(old) != identity_digest(new)
    assert changed(old, new) == ["the stage's code (mosear source files it runs)"]
