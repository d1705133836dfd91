"""A real OTLP/gRPC receiver (TraceService and MetricsService): what a collector such as
Jaeger, Tempo or the OpenTelemetry Collector would receive from Jisr.

Tests run it in-process (`Receiver`). The bench runs it in a process of its own,
`python -m tests.support.otlp [--port 0]`, which prints "otlp sink on 127.0.0.1:PORT" when
ready and, on SIGTERM or SIGINT, what it received as one JSON object, its last line. Trace
exports are kept as the bytes received and parsed when read, so that receiving takes
little of the cores of the gateways a bench measures (a collector would be elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver:
    """Keeps every trace export, and the name of every metric it is sent."""

    def __init__(self, port: int = 0) -> None:
        self.metric_names: set[str] = set()
        self.metric_services: set[str] = set()  # the service.name of their resources
        self._payloads: list[bytes] = []
        self._spans: list[tuple[str, Span]] = []
        self._parsed = 0
        self._lock = threading.RLock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for service, export in (("trace", self._traces), ("metrics", self._metrics)):
            name = f"opentelemetry.proto.collector.{service}.v1.{service.title()}Service"
            handler = grpc.unary_unary_rpc_method_handler(export)  # bytes in, bytes out
            self._server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(name, {"Export": handler}),)
            )
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _traces(self, payload: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self._payloads.append(payload)
        return b""  # an empty response message

    def _metrics(self, payload: bytes, context: grpc.ServicerContext) -> bytes:
        request = ExportMetricsServiceRequest.FromString(payload)
        scopes = [s for r in request.resource_metrics for s in r.scope_metrics]
        services = {_service(r.resource) for r in request.resource_metrics}
        with self._lock:
            self.metric_names.update(m.name for s in scopes for m in s.metrics)
            self.metric_services.update(services)
        return b""

    @property
    def spans(self) -> list[tuple[str, Span]]:
        """Every span received so far, with the service name of its resource."""
        with self._lock:
            for payload in self._payloads[self._parsed :]:
                for resource in ExportTraceServiceRequest.FromString(payload).resource_spans:
                    service = _service(resource.resource)
                    for scope in resource.scope_spans:
                        self._spans += [(service, s) for s in scope.spans]
            self._parsed = len(self._payloads)
            return self._spans

    def summary(self) -> dict[str, Any]:
        """How many spans were received, in all and by name."""
        by_name = Counter(span.name for _, span in self.spans)
        return {"spans": by_name.total(), "spans_by_name": dict(by_name.most_common())}

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


def _service(resource: Any) -> str:
    """The service.name attribute of an OTLP resource ("" without one)."""
    found = {a.key: a.value.string_value for a in resource.attributes}
    return str(found.get("service.name", ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.otlp", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--max-life", type=float, default=3600.0, help="exit after (s)")
    parser.add_argument("--nice", type=int, default=10, help="lower this process's priority")
    args = parser.parse_args(argv)
    os.nice(args.nice)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    receiver = Receiver(args.port)
    print(f"otlp sink on 127.0.0.1:{receiver.port}", flush=True)
    deadline = time.monotonic() + args.max_life
    while not stop.wait(0.5) and time.monotonic() < deadline:  # a signal may reach any thread
        pass
    receiver.stop()
    print(json.dumps(receiver.summary()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
