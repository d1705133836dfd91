"""The spans an exchange makes, as the SDK's span processors receive them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from gateway.telemetry import tracing

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{CALLER_SPAN:016x}-01"
METHOD = "jisr.v1.RegistryExchange/VerifyEligibility"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans go to memory through the SDK's simple processor; parent-based always-on."""
    exporter = InMemorySpanExporter()
    tracing.install(_pipeline(exporter, ParentBased(ALWAYS_ON)))
    yield exporter
    tracing.install(None)


def _pipeline(exporter: InMemorySpanExporter, sampler: Sampler) -> tracing.Pipeline:
    return tracing.Pipeline(
        processors=(SimpleSpanProcessor(exporter),),
        sampler=sampler,
        ids=RandomIdGenerator(),
        resource=Resource.create({"service.name": "jisr-test"}),
        scope=InstrumentationScope("jisr", "0"),
    )


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def _ctx(span: ReadableSpan) -> SpanContext:
    context = span.get_span_context()
    assert context is not None
    return context


def test_a_server_span_continues_the_callers_traceparent(
    exported: InMemorySpanExporter,
) -> None:
    with tracing.server_span(METHOD, [("traceparent", TRACEPARENT)], {"rpc.system": "grpc"}):
        pass
    (server,) = exported.get_finished_spans()
    assert server.name == METHOD
    assert server.kind is SpanKind.SERVER
    assert _ctx(server).trace_id == TRACE_ID
    assert server.parent is not None
    assert server.parent.span_id == CALLER_SPAN
    assert server.parent.is_remote
    assert dict(server.attributes or {}) == {"rpc.system": "grpc"}
    assert server.resource.attributes["service.name"] == "jisr-test"
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "jisr"


def test_without_a_traceparent_a_new_trace_starts(exported: InMemorySpanExporter) -> None:
    with tracing.server_span(METHOD, [("x-jisr-signature", "token")]):
        pass
    (server,) = exported.get_finished_spans()
    assert server.parent is None
    assert _ctx(server).trace_id != 0
    assert _ctx(server).trace_flags.sampled


def test_children_nest_under_the_span_open_when_they_start(
    exported: InMemorySpanExporter,
) -> None:
    with tracing.server_span(METHOD, []):
        with tracing.span("jisr.authenticate"):
            pass
        with tracing.span("jisr.consent"), tracing.span("jisr.adapter", {"jisr.keys": 4}):
            pass
    spans = _by_name(exported)
    server = _ctx(spans[METHOD])
    for name in ("jisr.authenticate", "jisr.consent"):
        parent = spans[name].parent
        assert parent is not None
        assert parent.span_id == server.span_id
        assert not parent.is_remote
    adapter_parent = spans["jisr.adapter"].parent
    assert adapter_parent is not None
    assert adapter_parent.span_id == _ctx(spans["jisr.consent"]).span_id
    assert {_ctx(s).trace_id for s in spans.values()} == {server.trace_id}
    assert len({_ctx(s).span_id for s in spans.values()}) == 4
    assert dict(spans["jisr.adapter"].attributes or {}) == {"jisr.keys": 4}


def test_spans_are_timed_and_end_in_order(exported: InMemorySpanExporter) -> None:
    with tracing.server_span(METHOD, []), tracing.span("jisr.receipt"):
        pass
    child, server = exported.get_finished_spans()
    assert child.name == "jisr.receipt"
    assert server.start_time is not None
    assert child.start_time is not None
    assert child.end_time is not None
    assert server.end_time is not None
    assert server.start_time <= child.start_time <= child.end_time <= server.end_time


def test_a_failed_span_carries_the_stable_reason_only(exported: InMemorySpanExporter) -> None:
    with tracing.server_span(METHOD, []):
        tracing.current().fail("CONSENT_MISSING")
    (server,) = exported.get_finished_spans()
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "CONSENT_MISSING"
    assert (server.attributes or {})["jisr.reason"] == "CONSENT_MISSING"
    assert not server.events


def test_an_exception_is_never_recorded(exported: InMemorySpanExporter) -> None:
    with (
        pytest.raises(ValueError, match="IDCS"),
        tracing.server_span(METHOD, []),
        tracing.span("jisr.adapter"),
    ):
        raise ValueError("quotes the IDCS AB123456")
    for span in exported.get_finished_spans():
        assert not span.events
        assert span.status.status_code is StatusCode.UNSET


def test_the_trace_id_and_outgoing_context_are_the_current_spans(
    exported: InMemorySpanExporter,
) -> None:
    with tracing.server_span(METHOD, [("traceparent", TRACEPARENT)]):
        assert tracing.trace_id() == f"{TRACE_ID:032x}"
        with tracing.span("FetchRecords", kind=tracing.CLIENT) as client:
            sent = dict(tracing.outgoing())
    assert isinstance(client, tracing.Span)
    assert sent["traceparent"] == f"00-{TRACE_ID:032x}-{client.context.span_id:016x}-01"
    assert tracing.trace_id() == ""
    assert tracing.outgoing() == []


def test_an_unsampled_caller_gets_no_spans_but_its_context_is_passed_on(
    exported: InMemorySpanExporter,
) -> None:
    unsampled = TRACEPARENT[:-2] + "00"
    with tracing.server_span(METHOD, [("traceparent", unsampled)]):
        with tracing.span("jisr.authenticate") as child:
            assert not child.recording
        sent = dict(tracing.outgoing())
    assert exported.get_finished_spans() == ()
    assert sent["traceparent"].startswith(f"00-{TRACE_ID:032x}-")
    assert sent["traceparent"].endswith("-00")


def test_a_sampler_that_says_no_records_nothing() -> None:
    exporter = InMemorySpanExporter()
    tracing.install(_pipeline(exporter, ALWAYS_OFF))
    try:
        with tracing.server_span(METHOD, []), tracing.span("jisr.audit"):
            pass
    finally:
        tracing.install(None)
    assert exporter.get_finished_spans() == ()


def test_with_tracing_off_the_callers_context_still_flows_through() -> None:
    tracing.install(None)
    with tracing.server_span(METHOD, [("traceparent", TRACEPARENT)]):
        assert not tracing.span("jisr.adapter").recording
        assert tracing.trace_id() == f"{TRACE_ID:032x}"
        sent = dict(tracing.outgoing())
    assert sent["traceparent"] == TRACEPARENT


def test_a_malformed_traceparent_starts_a_new_trace(exported: InMemorySpanExporter) -> None:
    with tracing.server_span(METHOD, [("traceparent", "00-not-a-trace-context-01")]):
        pass
    (server,) = exported.get_finished_spans()
    assert server.parent is None


def test_outside_an_rpc_the_partners_own_span_is_sent_on() -> None:
    partner = SpanContext(TRACE_ID, CALLER_SPAN, False, TraceFlags(TraceFlags.SAMPLED))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(partner)))
    try:
        assert dict(tracing.outgoing())["traceparent"] == TRACEPARENT
    finally:
        otel_context.detach(token)


def _what_a_call_makes(sampler: Sampler, metadata: list[tuple[str, str]]) -> tuple[object, ...]:
    """What a sampler's decision shows: spans recorded, and the context sent on."""
    exporter = InMemorySpanExporter()
    tracing.install(_pipeline(exporter, sampler))
    try:
        with tracing.server_span(METHOD, metadata):
            sent = dict(tracing.outgoing())
            trace_id = tracing.trace_id()
    finally:
        tracing.install(None)
    caller_trace = bool(metadata) and trace_id == f"{TRACE_ID:032x}"
    flags = sent["traceparent"][-2:]
    return len(exporter.get_finished_spans()), caller_trace, flags, sent.get("tracestate")


@pytest.mark.parametrize(
    ("default", "asked"),
    [
        (DEFAULT_ON, ParentBased(ALWAYS_ON)),  # an equal sampler the SDK is asked about
        (ALWAYS_ON, StaticSampler(Decision.RECORD_AND_SAMPLE)),
    ],
    ids=["parentbased_always_on", "always_on"],
)
@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("traceparent", TRACEPARENT), ("tracestate", "cnss=1")],
        [("traceparent", TRACEPARENT[:-2] + "00"), ("tracestate", "cnss=1")],
    ],
    ids=["no caller context", "sampled caller", "unsampled caller"],
)
def test_the_default_samplers_decide_as_the_sdk_does(
    default: Sampler, asked: Sampler, metadata: list[tuple[str, str]]
) -> None:
    assert _what_a_call_makes(default, metadata) == _what_a_call_makes(asked, metadata)


def test_a_server_span_never_follows_the_serving_threads_own_otel_context() -> None:
    unsampled = SpanContext(TRACE_ID, CALLER_SPAN, is_remote=False, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled)))
    try:
        asked = _what_a_call_makes(ParentBased(ALWAYS_ON), [])
        default = _what_a_call_makes(DEFAULT_ON, [])
    finally:
        otel_context.detach(token)
    assert asked == default
    assert asked[0] == 1  # recorded, as a new trace, not dropped with the ambient one


def test_spans_recorded_but_not_sampled_are_not_handed_to_the_sinks() -> None:
    queued: list[tracing.Span] = []

    class Sink:
        def put(self, span: tracing.Span) -> None:
            queued.append(span)

    exporter = InMemorySpanExporter()
    tracing.install(
        dataclasses.replace(
            _pipeline(exporter, StaticSampler(Decision.RECORD_ONLY)), sinks=(Sink(),)
        )
    )
    try:
        with tracing.server_span(METHOD, []) as server, tracing.span("jisr.audit"):
            assert server.recording
    finally:
        tracing.install(None)
    assert queued == []
    assert exporter.get_finished_spans() == ()  # the SDK's processors export sampled only
