"""What crosses the pipe to the span relay: the same spans, encoded to the same OTLP."""

from __future__ import annotations

import io
import marshal
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from gateway import span_relay, tracing

RESOURCE = Resource.create({"service.name": "jisr-gateway", "host.name": "gw-1"})
SCOPE = InstrumentationScope("jisr", "1.2.3")
# A caller's context with a trace state, so that every part of a span is carried.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Captured:
    """A sink that keeps what the relay would queue."""

    flats: list[span_relay.Flat] = field(default_factory=list)

    def put(self, span: tracing.Span) -> None:
        self.flats.append(span_relay.flat(span))


@dataclass
class Recorded:
    memory: InMemorySpanExporter
    captured: Captured


@pytest.fixture
def recorded() -> Recorded:
    """Spans of one exchange, as an SDK processor gets them and as the relay queues them."""
    memory, captured = InMemorySpanExporter(), Captured()
    tracing.install(
        tracing.Pipeline(
            processors=(SimpleSpanProcessor(memory),),
            sampler=ParentBased(ALWAYS_ON),
            ids=RandomIdGenerator(),
            resource=RESOURCE,
            scope=SCOPE,
            sinks=(captured,),
        )
    )
    metadata = [("traceparent", TRACEPARENT), ("tracestate", "ministry=cnss")]
    try:
        with tracing.server_span("jisr.v1.RegistryExchange/VerifyEligibility", metadata):
            with tracing.span("jisr.adapter", {"jisr.keys": 3, "ratio": 0.5, "ok": True}):
                pass
            with tracing.span("jisr.tags", {"tags": ("a", "b")}, kind=tracing.CLIENT):
                pass
            tracing.current().fail("CONSENT_MISSING")
    finally:
        tracing.install(None)
    return Recorded(memory, captured)


def _carried(flats: list[span_relay.Flat]) -> list[Any]:
    rebuild = span_relay.Rebuilder(marshal.loads(marshal.dumps(span_relay.header(RESOURCE, SCOPE))))
    return [rebuild(each) for each in marshal.loads(marshal.dumps(flats))]


def test_a_relayed_span_encodes_to_the_same_otlp_bytes(recorded: Recorded) -> None:
    direct = recorded.memory.get_finished_spans()
    relayed = _carried(recorded.captured.flats)
    assert len(direct) == len(relayed) == 3
    assert encode_spans(relayed).SerializeToString() == encode_spans(direct).SerializeToString()


def _frames(*payloads: Any) -> io.BytesIO:
    data = b""
    for payload in payloads:
        body = marshal.dumps(payload)
        data += struct.pack(">I", len(body)) + body
    return io.BytesIO(data)


def test_the_relay_exports_every_span_it_reads_with_the_gateways_resource(
    recorded: Recorded,
) -> None:
    flats = recorded.captured.flats
    memory = InMemorySpanExporter()
    head = span_relay.header(RESOURCE, SCOPE)
    count = span_relay.relay(_frames(head, flats[:1], flats[1:]), memory)
    received = memory.get_finished_spans()
    assert count == len(flats) == len(received)
    assert [s.name for s in received] == [f[0] for f in flats]
    assert {s.resource.attributes["host.name"] for s in received} == {"gw-1"}


def test_a_truncated_last_frame_is_dropped_not_misread(recorded: Recorded) -> None:
    flats = recorded.captured.flats
    pipe = _frames(span_relay.header(RESOURCE, SCOPE), flats)
    cut = io.BytesIO(pipe.getvalue() + struct.pack(">I", 1000) + b"partial")
    assert span_relay.relay(cut, InMemorySpanExporter()) == len(flats)


def test_a_pipe_that_does_not_start_with_the_header_is_refused() -> None:
    with pytest.raises(SystemExit, match="header"):
        span_relay.relay(_frames([("not", "a", "header")]), InMemorySpanExporter())


def test_a_header_of_another_version_is_refused() -> None:
    head = {**span_relay.header(RESOURCE, SCOPE), "version": 1}
    with pytest.raises(SystemExit, match="version"):
        span_relay.relay(_frames(head), InMemorySpanExporter())
