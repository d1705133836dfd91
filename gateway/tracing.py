"""Spans of every exchange, recorded cheaply on the request path, exported by the SDK.

Why not the SDK's tracer: its Span costs 20-30 µs to open and close (locks, attribute
validation, context attach), a VerifyEligibility has 7 or 8 spans, and tracing must cost the
gateway under 15 % of its throughput (docs/performance-tracing.md). Here a span is a few
plain values while it is open; when it ends it becomes the SDK's `ReadableSpan`, which the
configured span processors take exactly as from the SDK's own tracer. Sampling, ids,
resource, propagation (OTEL_PROPAGATORS) and export stay the SDK's.

Spans name institutions, methods, purposes, decisions, reasons and record ids; never an
IDCS, a household id, a name or a score. Exceptions are never recorded (their text may
quote request data): a failed span carries the stable reason only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol

from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

SERVER: Final = SpanKind.SERVER
CLIENT: Final = SpanKind.CLIENT
INTERNAL: Final = SpanKind.INTERNAL
_UNSET: Final = Status(StatusCode.UNSET)
_SAMPLED: Final = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_NOT_SAMPLED: Final = trace.TraceFlags(trace.TraceFlags.DEFAULT)


class SpanSink(Protocol):
    """Takes finished spans as they are, without the SDK's ReadableSpan (gateway.span_relay)."""

    def put(self, span: Span) -> None: ...


@dataclass(frozen=True)
class Pipeline:
    """Where finished spans go, and how traces are sampled and numbered: the SDK's parts,
    and sinks that take our spans directly (cheaper: no ReadableSpan is built for them)."""

    processors: tuple[SpanProcessor, ...]
    sampler: Sampler
    ids: IdGenerator
    resource: Resource
    scope: InstrumentationScope
    sinks: tuple[SpanSink, ...] = ()


_pipeline: Pipeline | None = None


def install(pipeline: Pipeline | None) -> None:
    """Send spans through `pipeline` from now on (None: record nothing)."""
    global _pipeline  # noqa: PLW0603 (one pipeline per process, set at start)
    _pipeline = pipeline


def installed() -> Pipeline | None:
    return _pipeline


class _NoSpan:
    """What a span is when nothing is recorded: every method does nothing."""

    __slots__ = ()
    recording: Final = False

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def fail(self, reason: str) -> None:
        return None


NO_SPAN: Final = _NoSpan()


class Span:
    """One recorded span of a trace; a context manager that makes it the current span."""

    __slots__ = (
        "_trace",
        "attributes",
        "context",
        "end",
        "kind",
        "name",
        "parent",
        "start",
        "status",
    )
    recording: Final = True

    def __init__(
        self,
        trace_: _Trace,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        parent: SpanContext | None,
        *,
        context: SpanContext | None = None,
    ) -> None:
        self._trace = trace_
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.parent = parent
        self.context = context or trace_.child_context()
        self.status = _UNSET
        self.start = 0
        self.end = 0

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def fail(self, reason: str) -> None:
        """Status ERROR with the stable reason as the only message."""
        self.attributes["jisr.reason"] = reason
        self.status = Status(StatusCode.ERROR, reason)

    def __enter__(self) -> Span:
        self._trace.stack.append(self)
        self.start = time.time_ns()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end = time.time_ns()
        stack = self._trace.stack
        if stack and stack[-1] is self:
            stack.pop()
        self._trace.emit(self)


class _Trace:
    """The spans of one RPC in this process: its context and the stack of open spans."""

    __slots__ = ("flags", "pipeline", "root", "stack", "state", "trace_id")

    def __init__(self, pipeline: Pipeline | None, root: SpanContext) -> None:
        self.pipeline = pipeline  # None: not recording, only propagating `root`
        self.root = root
        self.trace_id = root.trace_id
        self.flags = root.trace_flags
        self.state = root.trace_state
        self.stack: list[Span] = []

    def child_context(self) -> SpanContext:
        assert self.pipeline is not None
        span_id = self.pipeline.ids.generate_span_id()
        return SpanContext(self.trace_id, span_id, False, self.flags, self.state)

    def current_context(self) -> SpanContext:
        return self.stack[-1].context if self.stack else self.root

    def emit(self, span: Span) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        for sink in pipeline.sinks:
            sink.put(span)
        if not pipeline.processors:
            return
        readable = ReadableSpan(
            span.name,
            context=span.context,
            parent=span.parent,
            resource=pipeline.resource,
            attributes=span.attributes,
            kind=span.kind,
            status=span.status,
            start_time=span.start,
            end_time=span.end,
            instrumentation_scope=pipeline.scope,
        )
        for processor in pipeline.processors:
            processor.on_end(readable)


_active: ContextVar[_Trace | None] = ContextVar("jisr_trace", default=None)


class ServerSpan:
    """The span of one incoming RPC: continues the caller's trace context, holds the
    children opened while it is current, and hands every span to the pipeline."""

    __slots__ = ("_token", "_trace", "span")

    def __init__(
        self,
        name: str,
        metadata: Sequence[tuple[str, str | bytes]],
        attributes: dict[str, AttributeValue],
    ) -> None:
        parent = _incoming(metadata)
        self._trace: _Trace | None = None
        self.span: Span | _NoSpan = NO_SPAN
        pipeline = _pipeline
        if pipeline is None:
            if parent is not None:  # pass the caller's context on, record nothing
                self._trace = _Trace(None, parent)
            return
        trace_id = parent.trace_id if parent else pipeline.ids.generate_trace_id()
        parent_ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
        sampled = pipeline.sampler.should_sample(
            parent_ctx, trace_id, name, SERVER, attributes, None
        )
        decision = sampled.decision
        flags = _SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _NOT_SAMPLED
        span_id = pipeline.ids.generate_span_id()
        own = SpanContext(trace_id, span_id, False, flags, sampled.trace_state)
        if decision is Decision.DROP:
            self._trace = _Trace(None, own)
            return
        self._trace = _Trace(pipeline, own)
        attributes.update(sampled.attributes or {})
        self.span = Span(self._trace, name, SERVER, attributes, parent, context=own)

    def __enter__(self) -> Span | _NoSpan:
        self._token: Token[_Trace | None] = _active.set(self._trace)
        self.span.__enter__()
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.span.__exit__(kind, exc, tb)
        finally:
            _active.reset(self._token)


def server_span(
    name: str,
    metadata: Sequence[tuple[str, str | bytes]],
    attributes: Mapping[str, AttributeValue] | None = None,
) -> ServerSpan:
    """The SERVER span of an RPC, continuing the W3C trace context found in `metadata`."""
    return ServerSpan(name, metadata, dict(attributes or {}))


def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    kind: SpanKind = INTERNAL,
) -> Span | _NoSpan:
    """A child of the current span, to use in a `with`; a no-op outside a recorded trace."""
    active = _active.get()
    if active is None or active.pipeline is None:
        return NO_SPAN
    return Span(active, name, kind, dict(attributes or {}), active.current_context())


def current() -> Span | _NoSpan:
    """The innermost open span of this RPC (NO_SPAN when nothing is recorded)."""
    active = _active.get()
    if active is None or not active.stack:
        return NO_SPAN
    return active.stack[-1]


def current_context() -> SpanContext | None:
    """The context to name in logs and to send on: the innermost span's, else the OTel
    API's current span's (a partner's own code), None when there is none."""
    active = _active.get()
    if active is not None:
        return active.current_context()
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def trace_id() -> str:
    """The current trace id in hex, "" when there is no trace."""
    ctx = current_context()
    return format(ctx.trace_id, "032x") if ctx is not None else ""


def outgoing() -> list[tuple[str, str]]:
    """Metadata entries carrying the current trace context to the next process."""
    carrier: dict[str, str] = {}
    ctx = current_context()
    if ctx is not None:
        inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(ctx)))
    return list(carrier.items())


def _incoming(metadata: Iterable[tuple[str, str | bytes]]) -> SpanContext | None:
    """The caller's trace context from gRPC metadata (None if absent or malformed)."""
    carrier = {k: v for k, v in metadata if isinstance(v, str)}
    ctx = trace.get_current_span(extract(carrier)).get_span_context()
    return ctx if ctx.is_valid else None
