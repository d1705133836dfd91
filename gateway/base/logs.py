"""JSON logs, one object per line, for every logger of every Jisr process.

Each process (`jisr serve` and its workers, the DCI facade, the console, the portal, a
ministry backend) calls `setup` first: the root logger gets one JSON handler on stderr, so
the libraries' loggers (uvicorn, grpc, OpenTelemetry) write the same lines as Jisr's own,
at the level of JISR_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR; INFO by default; DEBUG for
Jisr's own loggers only). A record
carries only its own fields (never the request's): personal data stays out of the logs by
what the code logs, which the tests check. The trace and span ids of the current span are
added by the telemetry layer when it is installed (`trace_ids`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

LEVEL_ENV = "JISR_LOG_LEVEL"
# Libraries that log each request at INFO with its URL (which may carry a subject in a
# query string): WARNING at least, whatever the level asked.
QUIET = ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "hpack", "h2", "asyncio")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TraceIds = Callable[[], Mapping[str, str]]


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the trace id; only the record's own fields."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def __init__(self, trace_ids: TraceIds | None = None) -> None:
        super().__init__()
        self._trace_ids = trace_ids

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._trace_ids is not None:
            data.update(self._trace_ids())
        data.update({k: v for k, v in record.__dict__.items() if k not in self._SKIP})
        if record.exc_info and record.exc_info[0] is not None:
            data["exception"] = record.exc_info[0].__name__  # the type: a message may quote data
        return json.dumps(data, default=str)


def level(environ: Mapping[str, str] = os.environ) -> str:
    """JISR_LOG_LEVEL, or INFO (an unknown value is said once on stderr, then INFO)."""
    asked = environ.get(LEVEL_ENV, "INFO").strip().upper() or "INFO"
    if asked not in LEVELS:
        print(
            f"jisr: {LEVEL_ENV}={asked!r} is not one of {', '.join(LEVELS)}; logging at INFO",
            file=sys.stderr,
        )
        return "INFO"
    return asked


def setup(trace_ids: TraceIds | None = None, environ: Mapping[str, str] = os.environ) -> None:
    """Every logger of this process writes JSON lines to stderr at JISR_LOG_LEVEL."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(trace_ids))
    asked = level(environ)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # DEBUG is Jisr's own: the libraries' debug lines carry hosts, headers and URLs.
    root.setLevel("INFO" if asked == "DEBUG" else asked)
    jisr = logging.getLogger("jisr")
    jisr.handlers.clear()
    jisr.propagate = True
    jisr.setLevel(asked if asked == "DEBUG" else logging.NOTSET)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
