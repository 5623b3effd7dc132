"""The shared config loader: YAML + overrides, errors that name the field and the reason."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from mosear.config import ConfigError, StageConfig, config_hash, load_config, parse_overrides


class _Inner(StageConfig):
    size: int = Field(224, gt=0, description="frame side in pixels")


class _Demo(StageConfig):
    frames: int = Field(8, ge=1)
    mode: Literal["crop", "pad"] = "crop"
    inner: _Inner = _Inner()
    workers: int = 2


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("frames: 4\ninner:\n  size: 112\n")
    cfg = load_config(_Demo, path, ["inner.size=64", "mode=pad"])
    assert (cfg.frames, cfg.mode, cfg.inner.size) == (4, "pad", 64)


@pytest.mark.parametrize(
    "overrides, field, reason",
    [
        (["frames=0"], "frames", "greater than or equal to 1"),
        (["mode=stretch"], "mode", "'crop' or 'pad'"),
        (["inner.size=-3"], "inner.size", "greater than 0"),
        (["frmes=3"], "frmes", "unknown field"),
        (["frames=abc"], "frames", "valid integer"),
    ],
)
def test_bad_values_name_field_and_reason(overrides, field, reason):
    with pytest.raises(ConfigError) as info:
        load_config(_Demo, None, overrides)
    msg = str(info.value)
    assert f"- {field}:" in msg and reason in msg


@pytest.mark.parametrize(
    "content, needle",
    [("frames: [1, 2", "not valid YAML"), ("- a\n- b\n", "must be a mapping")],
)
def test_bad_files(tmp_path, content, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_config(_Demo, path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Demo, tmp_path / "nope.yaml")


def test_override_syntax():
    assert parse_overrides(["a.b=[1, 2]", "c=true", "d="]) == {"a": {"b": [1, 2]}, "c": True, "d": ""}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError, match="empty key"):
        parse_overrides(["a..b=1"])


def test_hash_is_stable_and_honours_exclude():
    a, b = _Demo(), _Demo(workers=8)
    assert config_hash(a) == config_hash(_Demo())
    assert config_hash(a) != config_hash(b)
    assert a.hash(exclude={"workers"}) == b.hash(exclude={"workers"})


def test_describe_config_lists_nested_fields_with_defaults():
    from mosear.config import describe_config

    text = describe_config(_Demo)
    assert "  frames = 8" in text and '  mode = "crop"' in text
    assert "  inner.size = 224  -- frame side in pixels" in text
