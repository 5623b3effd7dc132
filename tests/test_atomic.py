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
