"""The spans an exchange makes, as the SDK's span processors receive them."""

from __future__ import annotations

import marshal
import re
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from gateway.telemetry import relay, tracing

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{CALLER_SPAN:016x}-01"
METHOD = "jisr.v1.RegistryExchange/VerifyEligibility"


def _install(sampler: Sampler) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "jisr-test"}), sampler=sampler
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    return exporter


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans go to memory through the SDK's simple processor; parent-based always-on."""
    yield _install(ParentBased(ALWAYS_ON))
    tracing.install(None)


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


@pytest.mark.parametrize("metadata", [[], [("traceparent", "00-not-a-trace-context-01")]])
def test_without_a_valid_traceparent_a_new_trace_starts(
    exported: InMemorySpanExporter, metadata: list[tuple[str, str]]
) -> None:
    with tracing.server_span(METHOD, [("x-jisr-signature", "token"), *metadata]):
        pass
    (server,) = exported.get_finished_spans()
    assert server.parent is None
    assert _ctx(server).trace_id != 0
    assert _ctx(server).trace_flags.sampled


def test_steps_are_attributes_of_the_span_they_run_in(exported: InMemorySpanExporter) -> None:
    with tracing.server_span(METHOD, []):
        with tracing.span("jisr.authenticate"):
            pass
        for institution, keys in (("RSU", 1), ("CNSS", 4)):
            with tracing.span("jisr.adapter", {"jisr.institution": institution, "jisr.keys": keys}):
                pass
        with tracing.span("jisr.audit") as audit:
            audit.set_attribute("jisr.audit_id", "gw-1:42")
    (server,) = exported.get_finished_spans()
    steps = str(dict(server.attributes or {})["jisr.steps"]).split("; ")
    pattern = (
        r"authenticate \d+us",
        r"adapter \d+us institution=RSU keys=1",
        r"adapter \d+us institution=CNSS keys=4",
        r"audit \d+us audit_id=gw-1:42",
    )
    assert len(steps) == len(pattern)
    for step, expected in zip(steps, pattern, strict=True):
        assert re.fullmatch(expected, step), step


def test_a_batch_and_a_client_call_are_spans_of_their_own(
    exported: InMemorySpanExporter,
) -> None:
    with tracing.server_span(METHOD, []), tracing.span("jisr.batch", {"jisr.batch_index": 0}):
        with tracing.span("jisr.adapter", {"jisr.keys": 3}):
            pass
        with tracing.span("FetchRecords", kind=tracing.CLIENT):
            pass
    client, batch, server = exported.get_finished_spans()
    assert (client.kind, batch.kind) == (SpanKind.CLIENT, SpanKind.INTERNAL)
    assert client.parent is not None
    assert client.parent.span_id == _ctx(batch).span_id
    assert batch.parent is not None
    assert batch.parent.span_id == _ctx(server).span_id
    assert not batch.parent.is_remote
    assert {_ctx(s).trace_id for s in (client, batch, server)} == {_ctx(server).trace_id}
    assert re.fullmatch(r"adapter \d+us keys=3", str(dict(batch.attributes or {})["jisr.steps"]))
    assert "jisr.steps" not in dict(server.attributes or {})
    assert server.start_time is not None
    assert batch.start_time is not None
    assert batch.end_time is not None
    assert server.end_time is not None
    assert server.start_time <= batch.start_time <= batch.end_time <= server.end_time


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
        tracing.span("jisr.batch"),
        tracing.span("jisr.adapter"),
    ):
        raise ValueError("quotes the IDCS AB123456")
    spans = exported.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        assert not span.events
        assert span.status.status_code is StatusCode.UNSET
        assert "AB123456" not in repr(dict(span.attributes or {}))


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
    exporter = _install(ALWAYS_OFF)
    try:
        with tracing.server_span(METHOD, []), tracing.span("jisr.batch"):
            assert tracing.trace_id() != ""
    finally:
        tracing.install(None)
    assert exporter.get_finished_spans() == ()


def test_with_tracing_off_the_callers_context_still_flows_through() -> None:
    tracing.install(None)
    with tracing.server_span(METHOD, [("traceparent", TRACEPARENT)]):
        assert not tracing.span("jisr.adapter").recording
        assert not tracing.span("FetchRecords", kind=tracing.CLIENT).recording
        assert tracing.trace_id() == f"{TRACE_ID:032x}"
        sent = dict(tracing.outgoing())
    assert sent["traceparent"] == TRACEPARENT
    assert tracing.trace_id() == ""


def test_outside_an_rpc_the_partners_own_span_is_sent_on() -> None:
    partner = SpanContext(TRACE_ID, CALLER_SPAN, False, TraceFlags(TraceFlags.SAMPLED))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(partner)))
    try:
        assert dict(tracing.outgoing())["traceparent"] == TRACEPARENT
        assert tracing.current() is tracing.NO_SPAN
    finally:
        otel_context.detach(token)


def test_a_server_span_never_follows_the_serving_threads_own_otel_context(
    exported: InMemorySpanExporter,
) -> None:
    unsampled = SpanContext(TRACE_ID, CALLER_SPAN, is_remote=False, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled)))
    try:
        with tracing.server_span(METHOD, []):
            pass
    finally:
        otel_context.detach(token)
    (server,) = exported.get_finished_spans()  # recorded, as a new trace
    assert server.parent is None
    assert _ctx(server).trace_id != TRACE_ID


def test_the_relay_carries_every_part_of_a_span_to_the_same_otlp(
    exported: InMemorySpanExporter,
) -> None:
    caller = [("traceparent", TRACEPARENT), ("tracestate", "cnss=1")]
    with tracing.server_span(METHOD, caller, {"rpc.system": "grpc"}) as server:
        assert isinstance(server, tracing.Span)
        for key, value in (("n", 2**40), ("x", -0.0), ("ok", True), ("names", ["a", "b"])):
            server.set_attribute(f"jisr.{key}", value)
        server.otel.add_event("jisr.event", {"jisr.keys": 4})
        with tracing.span("jisr.batch"), tracing.span("jisr.adapter"):
            pass
        server.fail("CONSENT_MISSING")
    spans = exported.get_finished_spans()
    carried = [marshal.loads(marshal.dumps(relay.flat(span))) for span in spans]
    assert encode_spans([relay.unflat(v, spans[0].resource) for v in carried]) == encode_spans(
        spans
    )


def test_the_relays_resource_is_the_same_resource_hashed_once(
    exported: InMemorySpanExporter,
) -> None:
    with tracing.server_span(METHOD, [("traceparent", TRACEPARENT)], {"rpc.system": "grpc"}):
        with tracing.span("jisr.authenticate"):
            pass
        assert tracing.trace_id() == TRACEPARENT.split("-")[1]
        assert tracing.trace_id() == format(
            trace.get_current_span().get_span_context().trace_id, "032x"
        )
    spans = exported.get_finished_spans()
    own = spans[0].resource
    hashed = relay.SpansResource(dict(own.attributes), own.schema_url)
    assert hashed == own
    assert hash(hashed) == hash(own)
    carried = [relay.unflat(relay.flat(span), hashed) for span in spans]
    assert encode_spans(carried) == encode_spans(spans)
