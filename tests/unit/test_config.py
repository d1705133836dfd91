"""Gateway configuration: file, environment overrides, and errors naming the key."""

from __future__ import annotations

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
