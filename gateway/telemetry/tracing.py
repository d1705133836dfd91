"""Spans of every exchange, recorded cheaply on the request path, exported by the SDK.

Why not the SDK's tracer: its Span costs 20-30 µs to open and close (locks, attribute
validation, context attach), a VerifyEligibility has 7 or 8 spans, and tracing must cost
the gateway under 15 % of its throughput (docs/performance-tracing.md). Here a span is a
few plain values (ids as integers) while it is open; when it ends it goes to the pipeline's
sinks as it is (gateway.telemetry.span_relay) and, for the SDK's span processors (console, tests),
as the SDK's `ReadableSpan`, exactly as the SDK's own tracer would hand it over. Sampling,
ids, resource, propagation (OTEL_PROPAGATORS) and export stay the SDK's.

Spans name institutions, methods, purposes, decisions, reasons and record ids; never an
IDCS, a household id, a name or a score. Exceptions are never recorded (their text may
quote request data): a failed span carries the stable reason only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from random import getrandbits
from time import time_ns
from types import TracebackType
from typing import Final, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

# Kinds and status codes are kept as the SDK enums' integer values while a span is open:
# reading an enum member's value costs a Python-level descriptor call, several per span.
INTERNAL: Final = SpanKind.INTERNAL.value
SERVER: Final = SpanKind.SERVER.value
CLIENT: Final = SpanKind.CLIENT.value
_UNSET: Final = StatusCode.UNSET.value
_ERROR: Final = StatusCode.ERROR.value
_SAMPLED: Final = int(trace.TraceFlags.SAMPLED)  # plain ints: they cross to the relay
_NOT_SAMPLED: Final = int(trace.TraceFlags.DEFAULT)


class SpanSink(Protocol):
    """Takes finished spans as they are, without the SDK's ReadableSpan (span_relay.py)."""

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

    def __post_init__(self) -> None:
        # The SDK's default generator, without its method call; any other one as it is.
        new_span_id = self.ids.generate_span_id
        if type(self.ids) is RandomIdGenerator:
            new_span_id = _random_span_id
        object.__setattr__(self, "new_span_id", new_span_id)

    new_span_id: Callable[[], int] = field(init=False, repr=False, compare=False)


def _random_span_id() -> int:
    """As RandomIdGenerator.generate_span_id: 64 random bits, never the invalid 0."""
    return getrandbits(64) or _random_span_id()


_pipeline: Pipeline | None = None


def install(pipeline: Pipeline | None) -> None:
    """Send spans through `pipeline` from now on (None: record nothing)."""
    global _pipeline  # noqa: PLW0603 (one pipeline per process, set at start)
    _pipeline = pipeline


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


class Trace:
    """The spans of one RPC in this process: the trace's ids and the stack of open spans.
    Contexts (the SDK's SpanContext) are built only when asked for: logs, propagation."""

    __slots__ = (
        "flags",
        "pipeline",
        "root_id",
        "root_remote",
        "stack",
        "state",
        "state_header",
        "trace_id",
    )

    def __init__(
        self,
        pipeline: Pipeline | None,
        trace_id: int,
        root_id: int,
        flags: int,
        state: TraceState | None,
        *,
        root_remote: bool = False,
    ) -> None:
        self.pipeline = pipeline  # None: not recording, only propagating the root's context
        self.trace_id = trace_id
        self.root_id = root_id  # the server span's id, or the caller's when not recording
        self.root_remote = root_remote
        self.flags = flags
        self.state = state
        self.state_header = state.to_header() if state else ""
        self.stack: list[Span] = []

    @classmethod
    def of(cls, pipeline: Pipeline | None, root: SpanContext, *, remote: bool = False) -> Trace:
        return cls(
            pipeline,
            root.trace_id,
            root.span_id,
            int(root.trace_flags),
            root.trace_state,
            root_remote=remote,
        )

    def context_of(self, span_id: int, remote: bool = False) -> SpanContext:
        return SpanContext(self.trace_id, span_id, remote, trace.TraceFlags(self.flags), self.state)

    def current_context(self) -> SpanContext:
        stack = self.stack
        if stack:
            return self.context_of(stack[-1].span_id)
        return self.context_of(self.root_id, self.root_remote)

    def emit(self, span: Span) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        if self.flags & _SAMPLED:  # recorded but not sampled: not exported, as in the SDK
            for sink in pipeline.sinks:
                sink.put(span)
        if pipeline.processors:
            readable = span.readable(pipeline)
            for processor in pipeline.processors:
                processor.on_end(readable)


class Span:
    """One recorded span of a trace; a context manager that makes it the current span."""

    __slots__ = (
        "attributes",
        "code",
        "end",
        "kind",
        "message",
        "name",
        "parent_id",
        "parent_remote",
        "span_id",
        "start",
        "trace",
    )
    recording: Final = True

    def __init__(  # noqa: PLR0917 (positional: one per span, on the request path)
        self,
        trace_: Trace,
        name: str,
        kind: int,
        attributes: dict[str, AttributeValue],
        span_id: int,
        parent_id: int,
        parent_remote: bool = False,
    ) -> None:
        self.trace = trace_
        self.name = name
        self.kind = kind  # a SpanKind's value
        self.attributes = attributes
        self.span_id = span_id
        self.parent_id = parent_id  # 0: a root span
        self.parent_remote = parent_remote
        self.code = _UNSET  # a StatusCode's value
        self.message = ""
        self.start = 0
        self.end = 0

    @property
    def context(self) -> SpanContext:
        return self.trace.context_of(self.span_id)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def fail(self, reason: str) -> None:
        """Status ERROR with the stable reason as the only message."""
        self.attributes["jisr.reason"] = reason
        self.code = _ERROR
        self.message = reason

    def readable(self, pipeline: Pipeline) -> ReadableSpan:
        """This span as the SDK's processors and exporters take it."""
        parent = self.parent_id
        return ReadableSpan(
            self.name,
            context=self.context,
            parent=self.trace.context_of(parent, self.parent_remote) if parent else None,
            resource=pipeline.resource,
            attributes=self.attributes,
            kind=SpanKind(self.kind),
            status=Status(StatusCode(self.code), self.message or None),
            start_time=self.start,
            end_time=self.end,
            instrumentation_scope=pipeline.scope,
        )

    def __enter__(self) -> Span:
        self.trace.stack.append(self)
        self.start = time_ns()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end = time_ns()
        trace_ = self.trace
        stack = trace_.stack
        if stack and stack[-1] is self:
            stack.pop()
        trace_.emit(self)


_active: ContextVar[Trace | None] = ContextVar("jisr_trace", default=None)


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
        self._trace: Trace | None = None
        self.span: Span | _NoSpan = NO_SPAN
        pipeline = _pipeline
        if pipeline is None:
            if parent is not None:  # pass the caller's context on, record nothing
                self._trace = Trace.of(None, parent, remote=True)
            return
        trace_id = parent.trace_id if parent else pipeline.ids.generate_trace_id()
        decision, extra, state = _sample(pipeline.sampler, parent, trace_id, name, attributes)
        flags = _SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _NOT_SAMPLED
        span_id = pipeline.new_span_id()
        if decision is Decision.DROP:
            self._trace = Trace(None, trace_id, span_id, flags, state)
            return
        self._trace = Trace(pipeline, trace_id, span_id, flags, state)
        if extra:
            attributes.update(extra)
        self.span = Span(
            self._trace,
            name,
            SERVER,
            attributes,
            span_id,
            parent.span_id if parent else 0,
            parent is not None,
        )

    def __enter__(self) -> Span | _NoSpan:
        self._token: Token[Trace | None] = _active.set(self._trace)
        self.span.__enter__()
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.span.__exit__(kind, exc, tb)
        finally:
            _active.reset(self._token)


def _sample(
    sampler: Sampler,
    parent: SpanContext | None,
    trace_id: int,
    name: str,
    attributes: Mapping[str, AttributeValue],
) -> tuple[Decision, Mapping[str, AttributeValue] | None, TraceState | None]:
    """The sampler's decision for a SERVER span, the attributes it adds and the trace state.
    The SDK's default samplers (parent-based always-on, always-on) are answered here as the
    SDK answers them, without its call (several µs a request); any other is asked."""
    if sampler is DEFAULT_ON or sampler is ALWAYS_ON:
        if parent is None:
            return Decision.RECORD_AND_SAMPLE, None, None
        if sampler is ALWAYS_ON or parent.trace_flags.sampled:
            return Decision.RECORD_AND_SAMPLE, None, parent.trace_state
        return Decision.DROP, None, parent.trace_state
    # The caller's context only (an empty one without it): a server span never follows
    # whatever OTel context the serving thread happens to hold.
    parent_ctx = (
        trace.set_span_in_context(NonRecordingSpan(parent), Context()) if parent else Context()
    )
    result = sampler.should_sample(parent_ctx, trace_id, name, SpanKind.SERVER, attributes, None)
    return result.decision, result.attributes, result.trace_state


def server_span(
    name: str,
    metadata: Sequence[tuple[str, str | bytes]],
    attributes: Mapping[str, AttributeValue] | None = None,
) -> ServerSpan:
    """The SERVER span of an RPC, continuing the W3C trace context found in `metadata`."""
    return ServerSpan(name, metadata, dict(attributes or {}))


def span(
    name: str,
    attributes: dict[str, AttributeValue] | None = None,
    kind: int = INTERNAL,
) -> Span | _NoSpan:
    """A child of the current span, to use in a `with`; a no-op outside a recorded trace.
    The span keeps `attributes` (and adds to it): pass a dict of its own. `kind`: INTERNAL,
    SERVER or CLIENT of this module."""
    active = _active.get()
    if active is None:
        return NO_SPAN
    pipeline, stack = active.pipeline, active.stack
    if pipeline is None or not stack:
        return NO_SPAN
    return Span(
        active,
        name,
        kind,
        {} if attributes is None else attributes,
        pipeline.new_span_id(),
        stack[-1].span_id,
    )


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
    active = _active.get()
    if active is not None:
        return format(active.trace_id, "032x")
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
