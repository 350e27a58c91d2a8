"""File helpers: YAML files that cannot be read or parsed give ConfigError naming the file."""
import pytest

from dream_ros.errors import ConfigError
from dream_ros.resources import load_yaml_file
from dream_ros.robot_config import load_robot_config


def test_invalid_yaml_names_the_kind_of_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="robot config .*bad.yaml is not valid YAML"):
        load_robot_config(bad)


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read trajectory file"):
        load_yaml_file(tmp_path / "missing.yaml", "trajectory file")


def test_parsed_document(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("a: 1\nb: [2, 3]\n")
    assert load_yaml_file(f, "x") == {"a": 1, "b": [2, 3]}
