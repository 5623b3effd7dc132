"""`mosear mine` command line: stage listing and config errors that name the field."""

from __future__ import annotations

from mosear.cli import main


def test_list_stages(capsys):
    assert main(["mine", "--list-stages"]) == 0
    out = capsys.readouterr().out
    for name in ("audio_egemaps", "visual_fer", "text_lexicon", "hf_classifier", "signal_quality"):
        assert name in out


def test_bad_config_is_reported_with_the_field(capsys, tmp_path):
    assert main(["mine", "margin=2", f"output={tmp_path}"]) == 2
    assert "margin" in capsys.readouterr().err
    assert main(["mine", "splice.enabled=true"]) == 2  # splicing moved to the shard stage: say where
    assert "adapter: splice" in capsys.readouterr().err


def test_sample_config_loads(repo_root):
    from mosear.config import load_config
    from mosear.mine.config import MineConfig

    cfg = load_config(MineConfig, repo_root / "mosear" / "mine" / "configs" / "samples.yaml")
    assert cfg.stages[2] == "audio_egemaps"
