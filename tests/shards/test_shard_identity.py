"""The shard stage's skip decision compares content digests: a clip replaced under the same name (a
user re-downloading a damaged file) rebuilds exactly the shard that holds it."""

from __future__ import annotations

import json
import os
import shutil

from shard_helpers import shard_cfg


def _corpus(samples_dir, root):
    clips = sorted((samples_dir / "ravdess").glob("*.mp4"))[:4]
    (root / "ravdess").mkdir(parents=True)
    for c in clips:
        shutil.copy2(c, root / "ravdess" / c.name)
    (root / "corpus.yaml").write_text("sources:\n  - adapter: ravdess\n    root: ravdess\n")
    return sorted((root / "ravdess").iterdir())


def _state(out):
    return {p.name: (json.loads(p.read_text())["tar_sha256"], (out / p.name.replace(".stats.json", ".tar")).stat().st_ino)
            for p in sorted(out.glob("*.stats.json"))}


def test_replaced_clip_rebuilds_only_its_shard(samples_dir, ray_local, tmp_path):
    """Catches: the skip decision keyed on ``size:mtime`` (or any stat) instead of the clip's bytes
    (mutation: ``safe_digest`` in ``clips_digest`` replaced by ``f"{st.st_size}:{st.st_mtime_ns}"``): a clip
    rewritten in place with the same size and mtime would keep its stale shard. Also catches rebuilding
    shards whose clips did not change."""
    from mosear.identity import read_marker
    from mosear.shards.run import run_shard

    clips = _corpus(samples_dir, tmp_path / "c")
    out = tmp_path / "shards"
    cfg = shard_cfg(tmp_path / "c", out, samples_per_shard=2)
    first = run_shard(cfg)
    assert first.shards == 2 and first.written == 4
    before, marker0 = _state(out), read_marker(out)
    assert marker0["status"] == "complete"

    # the same name, other bytes (another take of the same actor), as `cp` leaves it
    shutil.copyfile(clips[1], clips[0])
    second = run_shard(shard_cfg(tmp_path / "c", out, samples_per_shard=2))
    after = _state(out)
    assert second.shards_skipped == 1, "exactly the shard holding the replaced clip is rebuilt"
    changed = [n for n in before if before[n] != after[n]]
    assert changed == ["train-000000.stats.json"], (before, after)
    assert before["train-000001.stats.json"] == after["train-000001.stats.json"]  # same file, not rewritten
    marker1 = read_marker(out)
    assert marker1["digest"] != marker0["digest"] and marker1["status"] == "complete"

    # same size, same mtime, other bytes (a bit flipped on disk, or a tool that restores the mtime):
    # only the bytes tell. One byte in the middle of the clip is changed in place and the mtime restored.
    st = clips[1].stat()
    original = clips[1].read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    clips[1].write_bytes(bytes(data))
    os.utime(clips[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (clips[1].stat().st_size, clips[1].stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    flipped = run_shard(shard_cfg(tmp_path / "c", out, samples_per_shard=2))
    assert flipped.shards_skipped == 1, "the shard holding the flipped clip is rebuilt"
    assert read_marker(out)["digest"] != marker1["digest"]
    clips[1].write_bytes(original)
    os.utime(clips[1], ns=(st.st_atime_ns, st.st_mtime_ns))  # the original bytes again
    assert run_shard(shard_cfg(tmp_path / "c", out, samples_per_shard=2)).shards_skipped == 1
    after = _state(out)

    # nothing changed: nothing is rebuilt, the identity is the same
    third = run_shard(shard_cfg(tmp_path / "c", out, samples_per_shard=2))
    assert third.shards_skipped == 2 and _state(out) == after and read_marker(out)["digest"] == marker1["digest"]


def test_changed_shard_code_rebuilds_every_shard(samples_dir, ray_local, tmp_path, monkeypatch):
    """Catches: a shard reused across a change of the shard stage's source (mutation: the ``code`` check in
    ``_committed`` removed, or ``build_shard`` not recording the driver's ``code``): a fixed decoder bug
    would keep serving the buggy shards."""
    import mosear.shards.run as shard_run
    from mosear.shards.run import run_shard

    _corpus(samples_dir, tmp_path / "c")
    out = tmp_path / "shards"
    assert run_shard(shard_cfg(tmp_path / "c", out, samples_per_shard=2)).shards == 2
    recorded = {json.loads(p.read_text()).get("code") for p in out.glob("*.stats.json")}
    assert recorded == {shard_run.shard_code()}
    monkeypatch.setattr(shard_run, "shard_code", lambda: "f" * 64)  # the source as after a fix
    assert run_shard(shard_cfg(tmp_path / "c", out, samples_per_shard=2)).shards_skipped == 0
    assert run_shard(shard_cfg(tmp_path / "c", out, samples_per_shard=2)).shards_skipped == 2
