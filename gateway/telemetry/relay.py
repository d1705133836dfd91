"""OTLP encoding and export of the gateway's spans in a child process, off its GIL.

The SDK's batch span processor hands each batch to `RelayExporter.export` (the SDK's
public SpanExporter interface), which writes the spans as plain values, read through
ReadableSpan's public properties, to a pipe: one `marshal` frame per batch, ~5 µs a span.
The child, `python -m gateway.telemetry.relay`, at nice 10, rebuilds each span with
ReadableSpan's public constructor, with the gateway's resource (sent first), and exports
it with the SDK's OTLP exporter, configured by the usual OTEL_EXPORTER_OTLP_* variables.
Why: the SDK's OTLP encoding is pure Python, ~30 µs a span, and in the gateway's process
it holds the GIL that serves the exchanges (docs/performance-tracing.md). Public API only,
on both sides; JISR_OTLP_RELAY=0 exports in-process instead. tests/unit/test_tracing.py
holds the OTLP a span becomes through the relay to the SDK's own, and fails if
ReadableSpan's public constructor drifts. Links are not carried (the gateway makes none).

A child that died is started again at the next batch, at most every RESTART_S; the batches
in between are dropped (the processor logs a failed export). It reads until its pipe
closes: it ends with the gateway, after exporting what it holds.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any, Final

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from gateway.base import logs

RESTART_S: Final = 5.0
STOP_S: Final = 10.0
_LENGTH: Final = struct.Struct(">I")


def flat(span: ReadableSpan) -> tuple[Any, ...]:
    """A span as plain values (what marshal carries), through public properties only."""
    ctx, parent, status = span.get_span_context(), span.parent, span.status
    assert ctx is not None
    scope = span.instrumentation_scope
    events = span.events
    return (
        span.name,
        ctx.trace_id,
        ctx.span_id,
        int(ctx.trace_flags),
        ctx.trace_state.to_header() if ctx.trace_state else "",
        (parent.span_id, parent.is_remote) if parent else None,
        span.kind.value,
        status.status_code.value,
        status.description,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        [(e.name, e.timestamp, dict(e.attributes or {})) for e in events] if events else [],
        scope.name if scope else "",
    )


_SCOPES: dict[str, InstrumentationScope] = {}


def unflat(values: Sequence[Any], resource: Resource) -> ReadableSpan:
    """The span `flat` gave, as the SDK's processors and exporters take it."""
    name, trace_id, span_id, flags, state, parent, kind, code, message = values[:9]
    start, end, attributes, events, scope = values[9:]
    trace_state = TraceState.from_header([state]) if state else None
    context = SpanContext(trace_id, span_id, False, TraceFlags(flags), trace_state)
    if (instrumentation := _SCOPES.get(scope)) is None:
        instrumentation = _SCOPES[scope] = InstrumentationScope(scope)
    return ReadableSpan(
        name,
        context=context,
        parent=(
            SpanContext(trace_id, parent[0], parent[1], TraceFlags(flags), trace_state)
            if parent
            else None
        ),
        resource=resource,
        attributes=attributes,
        events=[Event(n, a, t) for n, t, a in events],
        kind=SpanKind(kind),
        status=Status(StatusCode(code), message),
        start_time=start,
        end_time=end,
        instrumentation_scope=instrumentation,
    )


class SpansResource(Resource):
    """The resource of the spans the child exports, hashed once: the SDK's OTLP encoder
    groups a batch's spans by resource, hashing each span's, and a Resource's hash is a
    JSON dump of its attributes (~3 µs a span of the encoder's ~35)."""

    def __init__(self, attributes: dict[str, Any], schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._jisr_hash = super().__hash__()

    def __hash__(self) -> int:
        return self._jisr_hash


class RelayExporter(SpanExporter):
    """Ships each batch to the child process that exports it."""

    def __init__(self, resource: Resource) -> None:
        self._head = _frame((dict(resource.attributes), resource.schema_url))
        self._started = time.monotonic()
        self._child: subprocess.Popen[bytes] | None = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        """A child, given the spans' resource (the gateway's) as its first frame."""
        self._started = time.monotonic()
        argv = [sys.executable, "-m", __name__]
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, start_new_session=True)
        with contextlib.suppress(OSError):
            assert child.stdin is not None
            child.stdin.write(self._head)
            child.stdin.flush()
        return child

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        frame = _frame([flat(span) for span in spans])
        child = self._child
        if child is None:
            return SpanExportResult.FAILURE  # shut down
        if child.poll() is not None:
            if time.monotonic() - self._started < RESTART_S:
                return SpanExportResult.FAILURE
            child = self._child = self._start()
        try:
            assert child.stdin is not None
            child.stdin.write(frame)
            child.stdin.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the pipe; the child exports what it holds (within STOP_S), then exits."""
        if self._child is None:
            return
        child, self._child = self._child, None
        if child.stdin is not None:
            with contextlib.suppress(OSError):  # a child already gone
                child.stdin.close()
        try:
            child.wait(STOP_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _frame(payload: Any) -> bytes:
    data = marshal.dumps(payload)
    return _LENGTH.pack(len(data)) + data


def _frames(pipe: IO[bytes]) -> Iterator[Any]:
    """Frames until the pipe closes (a truncated last one, the gateway killed, dropped)."""
    while len(head := pipe.read(_LENGTH.size)) == _LENGTH.size:
        size = _LENGTH.unpack(head)[0]
        if len(data := pipe.read(size)) < size:
            return
        yield marshal.loads(data)


def main() -> int:
    """The child: the resource, then batches of spans, each exported over OTLP. Its own
    logs (the exporter's failures) are JSON lines at JISR_LOG_LEVEL, as every Jisr
    process's: it writes to the gateway's stderr, which a log shipper reads as JSON."""
    logs.setup()
    os.nice(10)
    frames = _frames(sys.stdin.buffer)
    attributes, schema_url = next(frames, ({}, None))
    resource = SpansResource(attributes, schema_url)
    exporter = OTLPSpanExporter()
    for batch in frames:
        exporter.export([unflat(values, resource) for values in batch])
    exporter.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
