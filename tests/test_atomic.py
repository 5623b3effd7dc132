"""The one atomic writer: complete file or the old one, never a half; folders swap whole."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mosear.atomic import atomic_open, atomic_write, atomic_write_json, atomic_write_parquet, remove_stale_temps, swap_dir


def test_failed_write_keeps_the_old_file(tmp_path):
    dest = atomic_write(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_open(dest, "w") as fh:
            fh.write("new, half")
            raise RuntimeError("killed")
    assert dest.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_helpers_write_whole_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    atomic_write_parquet(tmp_path / "t.parquet", pd.DataFrame({"k": ["a", "b"]}))
    assert (tmp_path / "x.json").read_text().strip().startswith("{") and pq.read_table(tmp_path / "t.parquet").num_rows == 2


def test_swap_dir_replaces_whole_folder(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "old.safetensors").write_text("old")
    staged = tmp_path / ".adapter.tmp-1"
    staged.mkdir()
    (staged / "new.safetensors").write_text("new")
    swap_dir(staged, tmp_path / "adapter")
    assert [p.name for p in (tmp_path / "adapter").iterdir()] == ["new.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    (tmp_path / ".x.tmp-9-ab").write_text("junk")
    assert remove_stale_temps(tmp_path) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def _fsync_spy(monkeypatch) -> list[int]:
    """Wrap the real ``os.fsync`` (it still runs) and record the inode of every descriptor it syncs."""
    import os

    synced: list[int] = []
    real = os.fsync

    def spy(fd):
        synced.append(os.fstat(fd).st_ino)
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


def test_atomic_write_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    """Catches: the file's ``os.fsync`` or the folder's ``fsync_dir`` removed from ``atomic_open`` (the
    rename could then reach the disk before the bytes, or be lost: an empty or missing file after a crash)."""
    synced = _fsync_spy(monkeypatch)
    dest = atomic_write(tmp_path / "sub" / "a.json", "{}")
    assert dest.stat().st_ino in synced, "the file's bytes were never fsynced"
    assert (tmp_path / "sub").stat().st_ino in synced, "the folder holding the rename was never fsynced"


def test_swap_dir_fsyncs_every_file_and_folder_at_any_depth(tmp_path, monkeypatch):
    """Catches: ``swap_dir`` fsyncing only top-level files (the peft weights sit at
    ``adapter/adapter/adapter_model.safetensors``, two levels down), or skipping the folders' fsyncs."""
    staged = tmp_path / ".adapter.tmp-1"
    (staged / "adapter").mkdir(parents=True)
    (staged / "model_config.json").write_text("{}")
    (staged / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (staged / "adapter" / "adapter_config.json").write_text("{}")
    synced = _fsync_spy(monkeypatch)
    dest = swap_dir(staged, tmp_path / "adapter")
    files = [dest / "model_config.json", dest / "adapter" / "adapter_model.safetensors", dest / "adapter" / "adapter_config.json"]
    for f in files:  # inodes survive the rename
        assert f.stat().st_ino in synced, f"{f.relative_to(tmp_path)} was never fsynced"
    for d in (dest, dest / "adapter", tmp_path):
        assert d.stat().st_ino in synced, f"folder {d.relative_to(tmp_path.parent)} was never fsynced"
