"""What a bad configuration file or environment is told: the file or variable, and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, Transport, load, processes_value


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jisr.toml"
    path.write_text(text)
    return path


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=f"^{missing}: cannot read "):
        load(missing, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[security]\ninsecure_plaintext = 1\n", "[security]: insecure_plaintext: must be true"),
        ("[institutions]\nCNSS = 3\n", "[institutions.CNSS]: must be a table"),
        ('server = "x"\n', "[server]: must be a table"),
        ('[data]\ndir = ""\n', "[data]: dir: must be a non-empty string"),
        ("[server]\nlisten = 50051\n", "[server]: listen: must be HOST:PORT"),
        ('[server]\nhealth_listen = ":x"\n', "[server]: health_listen: must be HOST:PORT"),
        ('[server]\nmetrics_listen = "h:70000"\n', "[server]: metrics_listen: must be HOST:PORT"),
        ("[server]\nprocesses = 0\n", "[server]: processes: must be 'auto' or a whole number"),
        ('[server]\npin_processes = "yes"\n', "[server]: pin_processes: must be true or false"),
        (
            "[institutions.RSU]\nrequired = true\n",
            '[institutions.RSU]: required: only for transport = "remote"',
        ),
        (
            '[institutions.CNSS]\ntransport = "remote"\ntarget = "h:1"\nrequired = 1\n',
            "[institutions.CNSS]: required: must be true or false",
        ),
        ('[server]\nworkers = "four"\n', "[server]: workers: must be a whole number"),
        ("[server]\nworkers = true\n", "[server]: workers: must be a positive whole number"),
    ],
)
def test_a_bad_value_in_the_file_names_its_table_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path, {})
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_an_institution_may_be_named_embedded_explicitly(tmp_path: Path) -> None:
    path = write(tmp_path, '[institutions.RSU]\ntransport = "embedded"\n')
    assert load(path, {}).institutions["RSU"] == Transport("embedded")


def test_whole_numbers_may_be_written_as_strings(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nworkers = "6"\n')
    assert load(path, {}).workers == 6


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_a_flag_in_the_environment_is_0_or_1(value: str) -> None:
    with pytest.raises(
        ConfigError, match=r"^environment: JISR_INSECURE_PLAINTEXT: must be 0 or 1$"
    ):
        load(None, {"JISR_INSECURE_PLAINTEXT": value})


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("1", True)])
def test_a_flag_in_the_environment_sets_the_setting(value: str, expected: bool) -> None:
    assert load(None, {"JISR_INSECURE_PLAINTEXT": value}).insecure_plaintext is expected


def test_pinning_is_off_unless_the_file_or_the_environment_asks(tmp_path: Path) -> None:
    assert load(None, {}).pin_processes is False
    assert load(write(tmp_path, "[server]\npin_processes = true\n"), {}).pin_processes is True
    assert load(None, {"JISR_PIN_PROCESSES": "1"}).pin_processes is True


def test_seconds_in_the_environment_may_be_fractional() -> None:
    assert load(None, {"JISR_REQUEST_TIMEOUT_SECONDS": "2.5"}).request_timeout_s == 2.5


def test_seconds_in_the_environment_must_be_a_number() -> None:
    with pytest.raises(
        ConfigError, match=r"^environment: JISR_STREAM_IDLE_SECONDS: must be a number of seconds$"
    ):
        load(None, {"JISR_STREAM_IDLE_SECONDS": "a minute"})


@pytest.mark.parametrize("value", ["0", "-1", "86400", "inf", "nan"])
def test_seconds_in_the_environment_are_within_a_day(value: str) -> None:
    with pytest.raises(ConfigError, match=r"must be between 0 and 86400 seconds$"):
        load(None, {"JISR_REQUEST_TIMEOUT_SECONDS": value})


def test_a_bad_processes_flag_is_named_as_given() -> None:
    with pytest.raises(ConfigError, match=r"^--processes: must be 'auto' or a whole number"):
        processes_value("0", "--processes")


def test_a_bad_address_in_the_environment_names_its_variable() -> None:
    with pytest.raises(ConfigError, match=r"^environment: JISR_METRICS_LISTEN: must be HOST:PORT"):
        load(None, {"JISR_METRICS_LISTEN": "127.0.0.1:metrics"})
