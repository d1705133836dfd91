"""Tracing, metrics and structured logs for every exchange, without personal data.

Spans and metrics carry institutions, methods, purposes, decisions, reasons and record ids
— never an IDCS, a household id, a name or a score. Export follows the standard OTEL_*
variables: OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, the console
when asked, nothing otherwise. Spans themselves are made by gateway.telemetry.tracing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from prometheus_client import start_http_server

from gateway.telemetry import tracing
from gateway.telemetry.relay import RelayExporter

TRACER_NAME = "jisr"


def setup_tracing(service_name: str, *, console: bool = False) -> TracerProvider | None:
    """The SDK's tracer provider, with a batch span processor per export wanted (OTLP when
    an endpoint is set, through the relay child unless JISR_OTLP_RELAY=0; the console when
    asked), installed for gateway.telemetry.tracing and the OTel API; None when tracing is
    off. Its `shutdown` exports the last spans."""
    env = os.environ
    tracing.install(None)
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service_name)})
    exporters: list[SpanExporter] = []
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        in_process = env.get("JISR_OTLP_RELAY", "1").strip().lower() in ("0", "false", "no")
        exporters.append(OTLPSpanExporter() if in_process else RelayExporter(resource))
    if console:
        exporters.append(ConsoleSpanExporter())
    if not exporters:
        return None
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracing.install(provider)
    return provider


def setup_metrics(listen: str | None, service_name: str) -> None:
    """Serve Prometheus `/metrics` on `listen` (host:port), and OTLP metrics if configured."""
    readers: list[Any] = []
    if listen:
        host, port = listen.rsplit(":", 1)
        start_http_server(int(port), addr=host.strip("[]"))
        readers.append(PrometheusMetricReader())
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
    ):
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if readers:
        resource = Resource.create({"service.name": service_name})
        # Exemplars (the current span's ids next to a measurement) cost ~2 µs per
        # measurement: off unless asked for.
        exemplars = (
            None if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
        )
        metrics.set_meter_provider(
            MeterProvider(resource=resource, metric_readers=readers, exemplar_filter=exemplars)
        )


# -- instruments (created against the global meter; no-ops until a provider is set) ------


class _Instruments:
    """Created lazily, after setup_metrics, so they bind to the real provider."""

    def __init__(self) -> None:
        m = metrics.get_meter(TRACER_NAME)
        self.requests = m.create_counter(
            "jisr.exchange.requests", description="exchanges by method, requester, decision"
        )
        self.latency = m.create_histogram(
            "jisr.exchange.duration", unit="ms", description="exchange latency"
        )
        self.consent_denials = m.create_counter(
            "jisr.consent.denials", description="exchanges refused for want of consent"
        )
        self.adapter_latency = m.create_histogram(
            "jisr.adapter.duration", unit="ms", description="registry lookups by institution"
        )
        self.adapter_errors = m.create_counter(
            "jisr.adapter.errors", description="registry lookups that failed"
        )


_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    global _instruments  # noqa: PLW0603 (one set per process, after setup)
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def observe_queue(depth: Any) -> None:
    """Report the audit writer's queue depth as a gauge (depth: a zero-argument callable)."""

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(int(depth()))

    metrics.get_meter(TRACER_NAME).create_observable_gauge(
        "jisr.audit.queue_depth", callbacks=[callback], description="records waiting to commit"
    )


@dataclass
class Clock:
    """Milliseconds since a start, for latency metrics."""

    start: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter())

    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0


# -- structured logs --------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the trace id; only the record's own fields."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_ctx = tracing.current_context()
        if span_ctx is not None:
            data["trace_id"] = format(span_ctx.trace_id, "032x")
            data["span_id"] = format(span_ctx.span_id, "016x")
        data.update({k: v for k, v in record.__dict__.items() if k not in self._SKIP})
        return json.dumps(data, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("jisr")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
