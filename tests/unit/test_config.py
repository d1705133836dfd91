"""Gateway configuration: file, environment overrides, and errors naming the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from gateway.config import ConfigError, Transport, load


def test_without_a_file_every_institution_is_embedded() -> None:
    config = load(None, {})
    assert config.listen == "127.0.0.1:50051"
    assert {t.kind for t in config.institutions.values()} == {"embedded"}
    assert set(config.institutions) == {"RNP", "RSU", "CNSS", "ANSS"}


def test_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jisr.toml"
    path.write_text('[data]\ndir = "reg"\nprogrammes = "p.toml"\n')
    config = load(path, {})
    assert config.data_dir == tmp_path / "reg"
    assert config.programmes == tmp_path / "p.toml"


def test_remote_institution_from_file(tmp_path: Path) -> None:
    path = tmp_path / "jisr.toml"
    path.write_text(
        '[institutions.CNSS]\ntransport = "remote"\ntarget = "127.0.0.1:7000"\ntimeout_ms = 500\n'
    )
    assert load(path, {}).institutions["CNSS"] == Transport("remote", "127.0.0.1:7000", 0.5)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jisr.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:1"\n')
    config = load(path, {"JISR_LISTEN": "127.0.0.1:2", "JISR_REMOTE_RNP": "127.0.0.1:3"})
    assert config.listen == "127.0.0.1:2"
    assert config.institutions["RNP"].target == "127.0.0.1:3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[institutions.XYZ]\n", "[institutions.XYZ]: unknown institution"),
        ('[institutions.CNSS]\ntransport = "remote"\n', "[institutions.CNSS]: target"),
        ('[institutions.CNSS]\ntransport = "pigeon"\n', "[institutions.CNSS]: transport"),
        ("[server]\nworkers = 0\n", "[server]: workers"),
        ("[server]\nport = 1\n", "[server]: port: unknown key"),
        ("[server\n", "jisr.toml"),
    ],
)
def test_invalid_config_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "jisr.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path, {})
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match="JISR_WORKERS"):
        load(None, {"JISR_WORKERS": "many"})


def test_audit_checkpoints_are_set_in_the_file_and_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "jisr.toml"
    file.write_text("[audit]\ncheckpoint_every = 50\ncheckpoint_seconds = 2.5\n")
    config = load(file, {})
    assert (config.audit_checkpoint_every, config.audit_checkpoint_seconds) == (50, 2.5)
    assert load(file, {"JISR_AUDIT_CHECKPOINT_SECONDS": "0.5"}).audit_checkpoint_seconds == 0.5


def test_a_checkpoint_interval_that_is_no_number_of_seconds_is_named(tmp_path: Path) -> None:
    file = tmp_path / "jisr.toml"
    file.write_text('[audit]\ncheckpoint_seconds = "soon"\n')
    with pytest.raises(ConfigError, match=r"jisr.toml: \[audit\]: checkpoint_seconds"):
        load(file, {})


def test_every_environment_variable_is_documented() -> None:
    documented = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    source = (Path(__file__).parents[2] / "gateway" / "config.py").read_text()
    variables = set(re.findall(r'"(JISR_[A-Z_]+)"', source))
    assert variables
    assert {v for v in variables if f"`{v}`" not in documented} == set()


ROOT = Path(__file__).resolve().parents[2]
OVERRIDABLE = ("server", "data", "security", "audit")  # [institutions.X]: JISR_REMOTE_X only


def _documented_variables() -> dict[str, str]:
    """docs/configuration.md's table: `section.key` -> the JISR_* variable overriding it."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(JISR_[A-Z_]+)` \| `([a-z_]+\.[a-z_]+)`", text, re.MULTILINE)
    return {key: variable for variable, key in rows}


def _file_keys(text: str) -> set[str]:
    doc = tomllib.loads(text)
    return {f"{section}.{key}" for section in OVERRIDABLE for key in doc.get(section, {})}


def test_every_key_of_the_shipped_and_documented_files_has_its_variable() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    example = documented.split("```toml\n", 1)[1].split("```", 1)[0]
    keys = _file_keys(example) | _file_keys((ROOT / "deploy" / "jisr.toml").read_text())
    assert sorted(keys - set(_documented_variables())) == []


def test_the_drain_time_comes_from_the_environment_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jisr.toml"
    path.write_text("[server]\ngrace_seconds = 20\n")
    assert load(path, {}).grace_s == 20.0
    assert load(path, {"JISR_GRACE_SECONDS": "5"}).grace_s == 5.0
