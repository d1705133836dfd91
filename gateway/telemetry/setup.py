"""Tracing, metrics and structured logs for every exchange, without personal data.

Spans and metrics carry institutions, methods, purposes, decisions, reasons and record ids
— never an IDCS, a household id, a name or a score. Export follows the standard OTEL_*
variables: OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, the console
when asked, nothing otherwise. Spans themselves are made by gateway.telemetry.tracing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from prometheus_client import start_http_server

from gateway.base import logs
from gateway.telemetry import tracing
from gateway.telemetry.relay import RelayExporter

TRACER_NAME = "jisr"
log = logging.getLogger("jisr.telemetry")
# The exporters OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER may name here (the
# specification's values; "prometheus" is the pull endpoint --metrics-listen serves).
TRACE_EXPORTERS = frozenset({"otlp", "console", "none"})
METRIC_EXPORTERS = frozenset({"otlp", "console", "prometheus", "none"})
# The Python SDK's own name for the OTLP exporter Jisr uses (OTLP over gRPC).
_ALIASES = {"otlp_proto_grpc": "otlp"}
# Durations in seconds: the SDK's default buckets (0 to 10,000) are for milliseconds.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def setup_tracing(service_name: str, *, console: bool = False) -> TracerProvider | None:
    """The SDK's tracer provider, with a batch span processor per export wanted (those
    OTEL_TRACES_EXPORTER names: OTLP when an endpoint is set, through the relay child unless
    JISR_OTLP_RELAY=0; the console, also when asked by the flag), installed for
    gateway.telemetry.tracing and the OTel API; None when tracing is off. Its `shutdown`
    exports the last spans."""
    env = os.environ
    tracing.install(None)
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    resource = _resource(service_name)
    exporters: list[SpanExporter] = []
    wanted = exporters_named("OTEL_TRACES_EXPORTER", TRACE_EXPORTERS, env)
    if "otlp" in wanted and _otlp_asked("OTEL_TRACES_EXPORTER", "TRACES", env):
        in_process = env.get("JISR_OTLP_RELAY", "1").strip().lower() in ("0", "false", "no")
        exporters.append(OTLPSpanExporter() if in_process else RelayExporter(resource))
    if console or "console" in wanted:
        exporters.append(ConsoleSpanExporter())
    if not exporters:
        return None
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracing.install(provider)
    return provider


def exporters_named(
    variable: str, known: frozenset[str], env: Mapping[str, str] = os.environ
) -> frozenset[str]:
    """The exporters `variable` names: a comma-separated list, "otlp" when unset, nothing
    when it says "none". A name this gateway does not export to is logged and left out,
    as the specification asks of an SDK (a typo must not stop the gateway)."""
    given = env.get(variable, "").strip().lower()
    names = {_ALIASES.get(n.strip(), n.strip()) for n in given.split(",") if n.strip()}
    names = names or {"otlp"}
    for name in sorted(names - known):
        log.warning("%s: %r is not an exporter Jisr knows (%s): ignored", variable, name,
                    ", ".join(sorted(known)))  # fmt: skip
    if "none" in names:
        if len(names) > 1:
            log.warning("%s: 'none' turns off the others it names", variable)
        return frozenset()
    return frozenset(names & known)


def _otlp_asked(variable: str, signal: str, env: Mapping[str, str]) -> bool:
    """With "otlp" among the exporters `variable` names: it was asked for by an endpoint
    (OTEL_EXPORTER_OTLP_ENDPOINT or the signal's own), or by setting `variable` (then at
    the SDK's default endpoint), not merely by default. Without either a gateway exports
    nothing, rather than retrying a collector nobody runs."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
    )
    return bool(endpoint) or bool(env.get(variable, "").strip())


def _resource(service_name: str) -> Resource:
    """service.name from OTEL_SERVICE_NAME (else ours), OTEL_RESOURCE_ATTRIBUTES merged by
    the SDK, and service.instance.id: this process (several share a service and a host)."""
    return Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name,
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        }
    )


def setup_metrics(listen: str | None, service_name: str) -> None:
    """Serve Prometheus `/metrics` on `listen` (host:port), and push metrics to the
    exporters OTEL_METRICS_EXPORTER names (OTLP when an endpoint is set)."""
    readers: list[Any] = []
    if listen:
        host, port = listen.rsplit(":", 1)
        start_http_server(int(port), addr=host.strip("[]"))
        readers.append(PrometheusMetricReader())
    wanted = exporters_named("OTEL_METRICS_EXPORTER", METRIC_EXPORTERS)
    if "otlp" in wanted and _otlp_asked("OTEL_METRICS_EXPORTER", "METRICS", os.environ):
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if "console" in wanted:
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    if readers:
        resource = _resource(service_name)
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
            "jisr.exchange.duration", unit="s", description="exchange latency",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )  # fmt: skip
        self.consent_denials = m.create_counter(
            "jisr.consent.denials", description="exchanges refused for want of consent"
        )
        self.adapter_latency = m.create_histogram(
            "jisr.adapter.duration", unit="s", description="registry lookups by institution",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )  # fmt: skip
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
    """Seconds since a start, for duration metrics (OpenTelemetry's unit for durations)."""

    start: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter())

    def seconds(self) -> float:
        return time.perf_counter() - self.start


# -- structured logs --------------------------------------------------------------------


def _trace_ids() -> dict[str, str]:
    span_ctx = tracing.current_context()
    if span_ctx is None:
        return {}
    return {
        "trace_id": format(span_ctx.trace_id, "032x"),
        "span_id": format(span_ctx.span_id, "016x"),
    }


def setup_logging() -> None:
    """JSON lines for every logger of this process, with the current span's ids
    (gateway/base/logs.py; the level from JISR_LOG_LEVEL)."""
    logs.setup(_trace_ids)
