"""`python -m bench.otlp_sink [--port 0]`: an OTLP/gRPC receiver that only counts.

What a collector (the OpenTelemetry Collector, Jaeger, Tempo) would receive from the
gateway: the TraceService and the MetricsService, plaintext on 127.0.0.1. Trace exports
are kept as the bytes received and parsed only when the sink stops, where their spans are
counted by span name: the sink stands for a collector on another machine, and its parsing
must not take the cores of the gateways being measured. Metric exports are counted and
answered too, so the gateway's OTLP metric exporter does not fail. Prints
"otlp sink on 127.0.0.1:PORT" when ready; on SIGTERM or SIGINT it stops serving and
prints what it received as one JSON object, its last line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from bench.common import HOST

# Longest a run of the bench may leave the sink up: it exits by itself after this.
MAX_LIFE_S = 3600.0


TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class Counts:
    """What the sink was sent, under a lock (the server's threads export concurrently)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trace_payloads: list[bytes] = []
        self.metric_exports = 0
        self.metric_points = 0

    def traces(self, payload: bytes) -> None:
        """One trace export, as received (parsed in `summary`)."""
        with self._lock:
            self._trace_payloads.append(payload)

    def metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        points = 0
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is not None:
                        points += len(getattr(metric, kind).data_points)
        with self._lock:
            self.metric_exports += 1
            self.metric_points += points

    def summary(self) -> dict[str, Any]:
        """Every trace export parsed, as a collector would have, and its spans counted."""
        with self._lock:
            payloads = list(self._trace_payloads)
            metric_exports, metric_points = self.metric_exports, self.metric_points
        spans_by_name: Counter[str] = Counter()
        request = trace_service_pb2.ExportTraceServiceRequest()
        for payload in payloads:
            request.ParseFromString(payload)
            spans_by_name.update(
                span.name
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            )
        return {
            "spans": sum(spans_by_name.values()),
            "spans_by_name": dict(spans_by_name.most_common()),
            "trace_exports": len(payloads),
            "trace_bytes": sum(len(p) for p in payloads),
            "metric_exports": metric_exports,
            "metric_points": metric_points,
        }


def _traces(counts: Counts) -> grpc.GenericRpcHandler:
    """TraceService/Export taking and answering raw bytes (an empty response message)."""

    def export(payload: bytes, context: grpc.ServicerContext) -> bytes:
        counts.traces(payload)
        return b""

    return grpc.method_handlers_generic_handler(
        TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, counts: Counts) -> None:
        self._counts = counts

    def Export(  # noqa: N802 (the gRPC method's name)
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._counts.metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def serve(port: int, workers: int, stop: threading.Event, max_life: float) -> dict[str, Any]:
    """Serve until `stop` is set (or `max_life` seconds); what was received."""
    counts = Counts()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((_traces(counts),))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _Metrics(counts), server
    )
    bound = server.add_insecure_port(f"{HOST}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {HOST}:{port}")
    server.start()
    started = time.monotonic()
    print(f"otlp sink on {HOST}:{bound}", flush=True)
    deadline = started + max_life
    try:
        while not stop.wait(0.5) and time.monotonic() < deadline:
            pass
    finally:
        server.stop(2.0).wait(5.0)
    result = counts.summary()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-life", type=float, default=MAX_LIFE_S, help="exit after (s)")
    parser.add_argument(
        "--nice",
        type=int,
        default=10,
        help="lower this process's priority by this much (default %(default)s): the sink"
        " stands for a collector on another machine, whose CPU is not the gateway's",
    )
    args = parser.parse_args(argv)
    # Not SCHED_IDLE: when gateways are measured side by side, the cores are never idle,
    # and a starved sink would make the relays time out and drop spans.
    if args.nice:
        os.nice(args.nice)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    result = serve(args.port, args.workers, stop, args.max_life)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
