"""Which exporters the standard OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER variables
ask for (gateway/telemetry/setup.py; docs/observability.md)."""

from __future__ import annotations

import logging

import pytest

from gateway.telemetry import setup as telemetry

TRACES, METRICS = telemetry.TRACE_EXPORTERS, telemetry.METRIC_EXPORTERS


def test_unset_means_otlp() -> None:
    assert telemetry.exporters_named("OTEL_TRACES_EXPORTER", TRACES, {}) == {"otlp"}


def test_a_list_names_each_exporter_in_any_case() -> None:
    env = {"OTEL_METRICS_EXPORTER": " OTLP , console"}
    assert telemetry.exporters_named("OTEL_METRICS_EXPORTER", METRICS, env) == {"otlp", "console"}


def test_none_turns_every_exporter_off() -> None:
    env = {"OTEL_TRACES_EXPORTER": "none"}
    assert telemetry.exporters_named("OTEL_TRACES_EXPORTER", TRACES, env) == set()


def test_an_unknown_exporter_is_logged_and_left_out(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OTEL_TRACES_EXPORTER": "zipkin,console"}
    with caplog.at_level(logging.WARNING, logger="jisr.telemetry"):
        named = telemetry.exporters_named("OTEL_TRACES_EXPORTER", TRACES, env)
    assert named == {"console"}
    assert [r.getMessage() for r in caplog.records] == [
        "OTEL_TRACES_EXPORTER: 'zipkin' is not an exporter Jisr knows (console, none, otlp):"
        " ignored"
    ]


def test_no_tracing_when_the_traces_exporter_is_none_even_with_an_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert telemetry.setup_tracing("jisr-gateway") is None


def test_the_python_sdks_name_for_otlp_over_grpc_is_otlp() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp_proto_grpc"}
    assert telemetry.exporters_named("OTEL_TRACES_EXPORTER", TRACES, env) == {"otlp"}


def test_none_beside_other_exporters_wins_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OTEL_METRICS_EXPORTER": "otlp,none"}
    with caplog.at_level(logging.WARNING, logger="jisr.telemetry"):
        named = telemetry.exporters_named("OTEL_METRICS_EXPORTER", METRICS, env)
    assert named == set()
    assert [r.getMessage() for r in caplog.records] == [
        "OTEL_METRICS_EXPORTER: 'none' turns off the others it names"
    ]
