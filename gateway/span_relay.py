"""OTLP export of the gateway's spans from a child process, off the gateway's GIL.

Why: encoding a span into OTLP costs ~20 µs of Python holding the GIL, about 150 µs per
VerifyEligibility, in the process that serves the exchanges. The relay's exporter, inside
the gateway's batch span processor, only flattens each span into plain values (~2 µs)
and writes batches as length-prefixed `marshal` frames on a pipe. The child,
`python -m gateway.span_relay`, rebuilds the spans and hands them to the SDK's own batch
span processor and OTLP exporter, configured by the same OTEL_* variables. The child reads
the pipe until it closes, so it ends with its gateway, even one that was killed.

If the child is gone, its batches are dropped (a warning names the count) and it is
started again, at most every RESTART_S seconds. `JISR_OTLP_RELAY=0` exports in the
gateway's own process instead (docs/observability.md).
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any, Final

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

log = logging.getLogger("jisr.span_relay")

RESTART_S: Final = 5.0
STOP_S: Final = 10.0  # how long shutdown waits for the child to export what it holds
_LENGTH: Final = struct.Struct(">I")
_FRAME_VERSION: Final = 1

Flat = tuple[Any, ...]


# -- the wire between gateway and child: marshal frames of plain values ------------------


def _trace_state(state: TraceState | None) -> str:
    return state.to_header() if state else ""


def flatten(span: ReadableSpan) -> Flat:
    """A span as plain values marshal can carry (same interpreter on both ends)."""
    ctx = span.context
    assert ctx is not None
    parent = span.parent
    scope = span.instrumentation_scope
    return (
        span.name,
        ctx.trace_id,
        ctx.span_id,
        int(ctx.trace_flags),
        _trace_state(ctx.trace_state),
        parent.span_id if parent else 0,
        bool(parent and parent.is_remote),
        span.kind.value,
        span.start_time,
        span.end_time,
        span.status.status_code.value,
        span.status.description or "",
        tuple(span.attributes.items()) if span.attributes else (),
        (scope.name, scope.version or "", scope.schema_url or "") if scope else ("", "", ""),
        tuple((e.name, e.timestamp, tuple((e.attributes or {}).items())) for e in span.events)
        if span.events
        else (),
        tuple(
            (
                ln.context.trace_id,
                ln.context.span_id,
                int(ln.context.trace_flags),
                ln.context.is_remote,
                _trace_state(ln.context.trace_state),
                tuple((ln.attributes or {}).items()),
            )
            for ln in span.links
        )
        if span.links
        else (),
    )


def rebuild(flat: Flat, resource: Resource) -> ReadableSpan:
    """The span `flatten` was given, as the SDK's exporters expect it."""
    (name, trace_id, span_id, flags, state, parent_id, parent_remote, kind) = flat[:8]
    (start, end, code, description, attributes, scope, events, links) = flat[8:]
    trace_state = TraceState.from_header([state]) if state else None
    flags_ = TraceFlags(flags)
    context = SpanContext(trace_id, span_id, False, flags_, trace_state)
    parent = SpanContext(trace_id, parent_id, parent_remote, flags_) if parent_id else None
    status_code = StatusCode(code)
    return ReadableSpan(
        name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=dict(attributes),
        events=[Event(n, dict(a), t) for n, t, a in events],
        links=[_link(*flat_link) for flat_link in links],
        kind=SpanKind(kind),
        status=Status(status_code, description or None)
        if status_code is not StatusCode.UNSET
        else Status(StatusCode.UNSET),
        start_time=start,
        end_time=end,
        instrumentation_scope=InstrumentationScope(scope[0], scope[1] or None, scope[2] or None)
        if scope[0]
        else None,
    )


def _link(
    trace_id: int,
    span_id: int,
    flags: int,
    remote: bool,
    state: str,
    attributes: tuple[tuple[str, Any], ...],
) -> Link:
    trace_state = TraceState.from_header([state]) if state else None
    return Link(
        SpanContext(trace_id, span_id, remote, TraceFlags(flags), trace_state), dict(attributes)
    )


def _write_frame(pipe: IO[bytes], payload: Any) -> None:
    data = marshal.dumps(payload)
    pipe.write(_LENGTH.pack(len(data)))
    pipe.write(data)
    pipe.flush()


def read_frames(pipe: IO[bytes]) -> Iterator[Any]:
    """Frames until the pipe closes (a truncated last frame is dropped)."""
    while True:
        head = pipe.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (size,) = _LENGTH.unpack(head)
        data = pipe.read(size)
        if len(data) < size:
            return
        yield marshal.loads(data)


# -- the gateway's side ------------------------------------------------------------------


class RelaySpanExporter(SpanExporter):
    """Hands batches of spans to the relay child, starting it (again) when needed."""

    def __init__(
        self,
        resource: Resource,
        argv: Sequence[str] | None = None,
        *,
        restart_s: float = RESTART_S,
    ) -> None:
        self._resource = resource
        self._restart_s = restart_s
        self._argv = list(argv or [sys.executable, "-m", "gateway.span_relay"])
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._dropped = 0
        self._shutdown = False
        self._start()

    def _start(self) -> None:
        self._started = time.monotonic()
        # Its own session: a Ctrl-C or SIGTERM sent to the gateway's process group does not
        # cut it short; it exports what the gateway flushed, then sees the pipe close.
        child = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
        )
        assert child.stdin is not None
        header = {
            "version": _FRAME_VERSION,
            "resource": dict(self._resource.attributes),
            "schema_url": self._resource.schema_url,
        }
        with contextlib.suppress(OSError):  # a dead child is found on the first export
            _write_frame(child.stdin, header)
        self._child = child

    @property
    def pid(self) -> int | None:
        """The relay child's process id (None once shut down)."""
        child = self._child
        return child.pid if child is not None else None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        frame = [flatten(span) for span in spans]
        with self._lock:
            child = self._child
            if child is None or child.poll() is not None:
                if time.monotonic() - self._started < self._restart_s:
                    return self._drop(len(frame))
                log.warning("span relay: child process gone; starting it again")
                self._start()
                child = self._child
            assert child is not None
            assert child.stdin is not None
            try:
                _write_frame(child.stdin, frame)
            except (OSError, ValueError):
                return self._drop(len(frame))
        return SpanExportResult.SUCCESS

    def _drop(self, count: int) -> SpanExportResult:
        self._dropped += count
        log.warning("span relay: %d spans dropped so far (no relay process)", self._dropped)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Close the pipe; the child exports what it holds and exits (or is killed)."""
        with self._lock:
            self._shutdown = True
            child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
        try:
            child.wait(STOP_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# -- the child's side --------------------------------------------------------------------


def relay(pipe: IO[bytes], exporter: SpanExporter) -> int:
    """Feed the spans read from `pipe` to a batch span processor over `exporter`; the
    number of spans relayed when the pipe closes."""
    frames = read_frames(pipe)
    header = next(frames, None)
    if not isinstance(header, dict) or header.get("version") != _FRAME_VERSION:
        raise SystemExit("span relay: the first frame must be the header of version 1")
    resource = Resource(header["resource"], header.get("schema_url") or None)
    processor = BatchSpanProcessor(exporter)
    count = 0
    try:
        for frame in frames:
            for flat in frame:
                processor.on_end(rebuild(flat, resource))
            count += len(frame)
    finally:
        processor.shutdown()  # type: ignore[no-untyped-call]  # (untyped in the SDK)
    return count


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    relay(sys.stdin.buffer, OTLPSpanExporter())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
