"""JSON lines for every logger of a process (gateway/base/logs.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from gateway.base import logs


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_librarys_logger_writes_the_same_json_lines(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup(environ={})
    logging.getLogger("uvicorn.error").warning("listening")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["logger"], line["level"], line["message"]) == (
        "uvicorn.error",
        "WARNING",
        "listening",
    )


def test_the_level_comes_from_jisr_log_level(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup(environ={"JISR_LOG_LEVEL": "warning"})
    logging.getLogger("jisr.test").info("hidden")
    logging.getLogger("jisr.test").error("shown")
    said = capsys.readouterr().err
    assert "hidden" not in said
    assert "shown" in said


def test_an_unknown_level_is_said_and_info_used(capsys: pytest.CaptureFixture[str]) -> None:
    assert logs.level({"JISR_LOG_LEVEL": "LOUD"}) == "INFO"
    assert "JISR_LOG_LEVEL='LOUD'" in capsys.readouterr().err


def test_an_exception_is_logged_by_its_type_only(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup(environ={})
    try:
        raise ValueError("IDCS AB123456 not found")
    except ValueError:
        logging.getLogger("jisr.test").exception("lookup failed")
    said = capsys.readouterr().err
    assert json.loads(said.strip().splitlines()[-1])["exception"] == "ValueError"
    assert "AB123456" not in said


def test_the_trace_ids_are_added_when_given(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup(lambda: {"trace_id": "t" * 32}, environ={})
    logging.getLogger("jisr.test").info("in a span")
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["trace_id"] == "t" * 32
