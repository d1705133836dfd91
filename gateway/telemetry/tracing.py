"""Spans at the edges of an exchange, with the OpenTelemetry SDK's public API.

A span per RPC served (SERVER, continuing the caller's W3C `traceparent`), per remote fetch
(CLIENT, adapters/remote.py) and per batch of a stream (`jisr.batch`). Every other
`with span(...)` inside them is a step: not a span of its own but one entry of the
`jisr.steps` attribute of the span it runs in, in the order the steps ended:
"authenticate 153us; adapter 180us institution=RSU record_kind=HOUSEHOLD keys=1; ...".
Why one attribute: with the SDK, a span costs ~25 µs of the gateway's GIL to record, and
each attribute ~1 µs more, and ~2.5 µs to encode (docs/performance-tracing.md).

Spans name institutions, methods, purposes, decisions, reasons and record ids; never an
IDCS, a household id, a name or a score. Exceptions are never recorded (their text may
quote request data): a failed span carries the stable reason only.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar, Token
from time import perf_counter_ns
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

INTERNAL: Final = SpanKind.INTERNAL
SERVER: Final = SpanKind.SERVER
CLIENT: Final = SpanKind.CLIENT
# INTERNAL spans that stay spans; any other INTERNAL one inside a span is a step.
SPANS: Final = frozenset({"jisr.batch"})

_tracer: trace.Tracer | None = None


def install(provider: trace.TracerProvider | None) -> None:
    """Record spans with `provider` from now on (None: record nothing)."""
    global _tracer  # noqa: PLW0603 (one provider per process, set at start)
    _tracer = provider.get_tracer("jisr") if provider is not None else None


class _NoSpan:
    """What a span is when nothing is recorded: every method does nothing."""

    __slots__ = ()
    recording: Final = False

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None: ...

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def fail(self, reason: str) -> None: ...


NO_SPAN: Final = _NoSpan()
_frame: ContextVar[Span | None] = ContextVar("jisr_span", default=None)


class Span:
    """An SDK span, current (for the OTel API too) while its `with` block runs. Its
    attributes are set when it ends, with the steps run inside it: one call to the SDK."""

    __slots__ = ("_frame_token", "_token", "_trace_hex", "attributes", "otel", "recording", "steps")

    def __init__(self, otel: trace.Span) -> None:
        self.otel = otel
        self.recording = otel.is_recording()
        self.attributes: dict[str, AttributeValue] = {}
        self.steps: list[str] = []
        self._trace_hex: str | None = None

    @property
    def context(self) -> SpanContext:
        return self.otel.get_span_context()

    def trace_hex(self) -> str:
        """Its trace id in hex ("" if invalid), worked out once: a call asks for it for
        its receipt and for its audit record."""
        if self._trace_hex is None:
            ctx = self.otel.get_span_context()
            self._trace_hex = format(ctx.trace_id, "032x") if ctx.is_valid else ""
        return self._trace_hex

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def fail(self, reason: str) -> None:
        """Status ERROR with the stable reason as the only message."""
        self.attributes["jisr.reason"] = reason
        self.otel.set_status(Status(StatusCode.ERROR, reason))

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self.otel))
        self._frame_token: Token[Span | None] = _frame.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _frame.reset(self._frame_token)
        otel_context.detach(self._token)
        if self.steps:
            self.attributes["jisr.steps"] = "; ".join(self.steps)
        if self.attributes:
            self.otel.set_attributes(self.attributes)
        self.otel.end()


_SHORT: dict[str, str] = {}


def _short(name: str) -> str:
    """A step's or attribute's name without its "jisr." prefix (a few names, kept)."""
    short = _SHORT.get(name)
    if short is None:
        short = _SHORT[name] = name.removeprefix("jisr.")
    return short


class _Step:
    """A step of the span it runs in: timed, and kept in that span's `jisr.steps`."""

    __slots__ = ("attributes", "name", "owner", "start")
    recording: Final = True

    def __init__(self, owner: Span, name: str, attributes: dict[str, AttributeValue]) -> None:
        self.owner = owner
        self.name = name
        self.attributes = attributes

    def __enter__(self) -> _Step:
        self.start = perf_counter_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        us = (perf_counter_ns() - self.start) // 1000
        entry = f"{_short(self.name)} {us}us"
        if self.attributes:
            entry += "".join(
                [f" {_short(key)}={value!s}" for key, value in self.attributes.items()]
            )
        self.owner.steps.append(entry)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def fail(self, reason: str) -> None:
        self.attributes["jisr.reason"] = reason


class ServerSpan:
    """The span of one incoming RPC, continuing the caller's trace context. With tracing
    off, the caller's context is still made current: its trace id goes into receipts and
    audit records, and on to remote backends."""

    __slots__ = ("_carried", "_token", "span")

    def __init__(
        self,
        name: str,
        metadata: Sequence[tuple[str, str | bytes]],
        attributes: dict[str, AttributeValue],
    ) -> None:
        self._carried: Context | None = None
        self.span: Span | _NoSpan = NO_SPAN
        # The caller's context (an empty one if absent or malformed): never whatever OTel
        # context the serving thread happens to hold.
        caller = extract({k: v for k, v in metadata if isinstance(v, str)})
        if _tracer is not None:
            self.span = Span(
                _tracer.start_span(name, caller, SERVER, attributes, record_exception=False)
            )
        elif trace.get_current_span(caller).get_span_context().is_valid:
            self._carried = caller

    def __enter__(self) -> Span | _NoSpan:
        if self._carried is not None:
            self._token = otel_context.attach(self._carried)
        return self.span.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.span.__exit__(*exc)
        if self._carried is not None:
            otel_context.detach(self._token)


def server_span(
    name: str,
    metadata: Sequence[tuple[str, str | bytes]],
    attributes: dict[str, AttributeValue] | None = None,
) -> ServerSpan:
    """The SERVER span of an RPC, continuing the W3C trace context found in `metadata`."""
    return ServerSpan(name, metadata, dict(attributes or {}))


def span(
    name: str,
    attributes: dict[str, AttributeValue] | None = None,
    kind: SpanKind = INTERNAL,
) -> Span | _Step | _NoSpan:
    """Inside a recorded span: a CLIENT span or one of SPANS, a child span; else a step
    of the current span. A no-op outside a recorded span. A step keeps `attributes` (and
    adds to it): pass a dict of its own."""
    current = _frame.get()
    if current is None or not current.recording or _tracer is None:
        return NO_SPAN
    if kind is INTERNAL and name not in SPANS:
        return _Step(current, name, {} if attributes is None else attributes)
    return Span(_tracer.start_span(name, kind=kind, attributes=attributes, record_exception=False))


def current() -> Span | _NoSpan:
    """The innermost span (not step) of this RPC; NO_SPAN outside a recorded one."""
    return _frame.get() or NO_SPAN


def current_context() -> SpanContext | None:
    """The current span's context (the OTel API's: ours, a caller's carried with tracing
    off, or a partner's own), None when there is none: for logs and propagation."""
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def trace_id() -> str:
    """The current trace id in hex, "" when there is no trace. Inside a span of ours,
    that span's (a span started inside it with the OTel API is of the same trace)."""
    frame = _frame.get()
    if frame is not None:
        return frame.trace_hex()
    ctx = current_context()
    return format(ctx.trace_id, "032x") if ctx is not None else ""


def outgoing() -> list[tuple[str, str]]:
    """Metadata entries carrying the current trace context to the next process."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return list(carrier.items())
