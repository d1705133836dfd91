"""`python -m bench.otlp_sink [--port 0]`: an OTLP/gRPC receiver that only counts.

What a collector (the OpenTelemetry Collector, Jaeger, Tempo) would receive from the
gateway: the TraceService and the MetricsService, plaintext on 127.0.0.1. Each export is
parsed (as a collector must) and its spans counted, by span name; metric exports are
counted and answered too, so the gateway's OTLP metric exporter does not fail. Prints
"otlp sink on 127.0.0.1:PORT" when ready; on SIGTERM or SIGINT it stops serving and
prints what it received as one JSON object, its last line on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
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
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.common import HOST

# Longest a run of the bench may leave the sink up: it exits by itself after this.
MAX_LIFE_S = 3600.0


class Counts:
    """What the sink was sent, under a lock (the server's threads export concurrently)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans_by_name: Counter[str] = Counter()
        self.trace_exports = 0
        self.trace_bytes = 0
        self.metric_exports = 0
        self.metric_points = 0

    def traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        names = [
            span.name
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        size = request.ByteSize()
        with self._lock:
            self.spans_by_name.update(names)
            self.trace_exports += 1
            self.trace_bytes += size

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
        with self._lock:
            return {
                "spans": sum(self.spans_by_name.values()),
                "spans_by_name": dict(self.spans_by_name.most_common()),
                "trace_exports": self.trace_exports,
                "trace_bytes": self.trace_bytes,
                "metric_exports": self.metric_exports,
                "metric_points": self.metric_points,
            }


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, counts: Counts) -> None:
        self._counts = counts

    def Export(  # noqa: N802 (the gRPC method's name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._counts.traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


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
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _Traces(counts), server
    )
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
    if args.nice:
        os.nice(args.nice)
        # SCHED_IDLE as well: the sink takes only CPU that nothing else wants.
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
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
