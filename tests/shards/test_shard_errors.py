"""An error is never a result (issue 22, item 3): a decode *bug* fails its shard; a bad clip is quarantined."""

from __future__ import annotations

import json
import shutil

import pytest
from shard_helpers import shard_cfg


def test_unexpected_decode_exception_fails_the_shard_and_is_rebuilt_after_the_fix(samples_dir, tmp_path, monkeypatch):
    """Catches: an unexpected exception while decoding one clip (a bug, not a bad clip) written as a
    ``worker_error`` quarantine row in a committed shard (mutation: ``except Exception`` back in
    ``build_shard``). The issue measured exit 0, ``complete``, 0 written, 14 quarantined, and the rerun
    after the fix reused that shard. Here the shard is not committed (no tar, index or stats), the driver's
    ``_ray_build`` reports it as a failed shard, and after the fix it is built and not quarantined."""
    import mosear.media.decode as decode
    from mosear.shards.plan import plan_corpus
    from mosear.shards.run import _committed, _ray_build, build_shard, clips_digest
    from mosear.identity import DigestMemo

    root = tmp_path / "c"
    (root / "ravdess").mkdir(parents=True)
    for c in sorted((samples_dir / "ravdess").glob("*.mp4"))[:2]:
        shutil.copy2(c, root / "ravdess" / c.name)
    (root / "corpus.yaml").write_text("sources:\n  - adapter: ravdess\n    root: ravdess\n")
    out = tmp_path / "shards"
    out.mkdir()
    cfg = shard_cfg(root, out, samples_per_shard=2)
    shard = plan_corpus(cfg).shards[0]
    digest = clips_digest(shard, DigestMemo())
    real = decode.decode_clip
    calls = []

    def buggy(path, **kw):  # the bug hits the second clip only, after the first was written
        calls.append(path)
        if len(calls) == 2:
            raise IndexError("list index out of range (an injected decoder bug)")
        return real(path, **kw)

    monkeypatch.setattr(decode, "decode_clip", buggy)
    with pytest.raises(IndexError, match="injected decoder bug"):
        build_shard(shard, cfg, out, "h", digest)
    assert sorted(p.name for p in out.iterdir()) == [], "a failed shard left files (or committed)"
    assert not _committed(out, shard, "h", digest)
    calls.clear()
    failed = _ray_build({"split": shard.split, "index": shard.index, "clips": shard.clips, "inputs_digest": digest},
                        cfg.model_copy(update={"corpus": None}).model_dump_json(), str(out), "h")
    assert failed["shard"] == shard.name and "IndexError" in failed["error"] and failed["clips"] == 2

    monkeypatch.setattr(decode, "decode_clip", real)  # the fix
    stats = build_shard(shard, cfg, out, "h", digest)
    assert stats["num_samples"] == 2 and stats["num_failed"] == 0
    assert json.loads((out / f"{shard.name}.stats.json").read_text())["inputs_digest"] == digest


def test_a_consumer_checks_the_tar_against_its_recorded_digest(sample_shards, tmp_path):
    """Catches: consumers trusting the ``tar_sha256`` a shard's stats record instead of its bytes
    (mutation: ``verify_shard`` call removed from ``iter_samples``): a tar damaged after its commit (same
    size, a flipped byte) would be trained or evaluated on silently. Mining reads through the same
    ``iter_samples``, so a damaged shard fails its mining unit instead of becoming evidence."""
    import mosear.shards.reader as reader
    from mosear.shards.reader import ShardDigestError, iter_samples, list_shards

    cfg, _ = sample_shards
    copy = tmp_path / "shards"
    shutil.copytree(cfg.output, copy)
    tar = list_shards(copy)[0]
    n = sum(1 for _ in iter_samples([tar]))
    assert n > 0
    data = bytearray(tar.read_bytes())
    data[len(data) // 3] ^= 0x01  # same size: the stats' tar_bytes still agree
    tar.write_bytes(bytes(data))
    with pytest.raises(ShardDigestError, match=rf"{tar.name}: its bytes .* are not those its commit marker records"):
        next(iter_samples([tar]))
    assert reader._VERIFIED is not None  # a checked, unchanged shard is not hashed again (per file stat)
