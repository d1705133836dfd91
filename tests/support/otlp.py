"""A real OTLP/gRPC receiver (TraceService and MetricsService) for tests: what a collector
such as Jaeger, Tempo or the OpenTelemetry Collector would receive from Jisr."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """Collects every span (with its service name) and every metric name it is sent."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.metric_names: set[str] = set()
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self, self._server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self, self._server
        )
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(  # noqa: N802 (gRPC method name; serves both services)
        self, request: object, context: grpc.ServicerContext
    ) -> object:
        with self._lock:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                for resource in request.resource_spans:
                    service = next(
                        (
                            a.value.string_value
                            for a in resource.resource.attributes
                            if a.key == "service.name"
                        ),
                        "",
                    )
                    for scope in resource.scope_spans:
                        self.spans.extend((service, span) for span in scope.spans)
                return trace_service_pb2.ExportTraceServiceResponse()
            assert isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest)
            for metrics in request.resource_metrics:
                for scoped in metrics.scope_metrics:
                    self.metric_names.update(m.name for m in scoped.metrics)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    def wait_for(self, predicate: Callable[[], bool], seconds: float = 30.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self._server.stop(None)
