"""The `mosear` dispatcher: subcommands, exit codes, overrides before or after flags."""

from __future__ import annotations

import pytest

from mosear.cli import COMMANDS, main


def test_help_lists_every_stage(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit) as info:
        main(["bogus"])
    assert info.value.code == 2


@pytest.mark.parametrize("argv", [["--check", "shards=[nowhere]"], ["shards=[nowhere]", "--check"]])
def test_overrides_and_flags_in_any_order(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv]) == 2  # a bad config, reported before any work
    assert "nowhere" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mosear", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "run" in out.stdout
