"""Configuration is checked key by key against config.defaults.yaml."""

from pathlib import Path

import pytest
import yaml

from tails.config import DEFAULTS_PATH, ConfigError, load_config


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def test_defaults_load_and_document_every_key():
    cfg = load_config(DEFAULTS_PATH)
    assert cfg["tails"]["score_threshold"] == 0.5
    text = DEFAULTS_PATH.read_text().splitlines()
    # every top-level section is preceded by a comment
    for i, line in enumerate(text):
        if line and not line.startswith((" ", "#")):
            assert any(t.startswith("#") for t in text[max(0, i - 3) : i]), line


def test_missing_key_is_named(tmp_path):
    cfg = load_config()
    del cfg["irsa"]["url"]
    with pytest.raises(ConfigError, match=r"'irsa\.url' is missing"):
        load_config(_write(tmp_path, cfg))


def test_unknown_key_is_named(tmp_path):
    cfg = load_config()
    cfg["tails"]["score_treshold"] = 0.6
    with pytest.raises(ConfigError, match=r"'tails\.score_treshold' is unknown"):
        load_config(_write(tmp_path, cfg))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "irsa: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a list\n"))
