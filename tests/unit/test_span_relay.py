"""What crosses the pipe to the span relay: the same spans, encoded to the same OTLP."""

from __future__ import annotations

import io
import marshal
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from gateway import span_relay

RESOURCE = Resource.create({"service.name": "jisr-gateway", "host.name": "gw-1"})


def _sdk_spans() -> Sequence[ReadableSpan]:
    """Spans with every part a span can have: remote parent, trace state, attributes of
    each type, an event, a link, an error status."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("jisr", "1.2.3")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        True,
        TraceFlags(TraceFlags.SAMPLED),
        TraceState([("ministry", "cnss")]),
    )
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span(
        "jisr.v1.RegistryExchange/VerifyEligibility",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "jisr.keys": 3, "ratio": 0.5, "ok": True},
        links=[Link(remote, {"why": "batch"})],
    ) as server:
        server.add_event("checkpoint", {"jisr.audit_id": "gw-1:42"})
        with tracer.start_as_current_span("jisr.adapter", attributes={"tags": ("a", "b")}):
            pass
        server.set_status(Status(StatusCode.ERROR, "CONSENT_MISSING"))
    provider.shutdown()
    return memory.get_finished_spans()


def _carried(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    frame = marshal.loads(marshal.dumps([span_relay.flatten(s) for s in spans]))
    return [span_relay.rebuild(flat, RESOURCE) for flat in frame]


def test_a_relayed_span_encodes_to_the_same_otlp_bytes() -> None:
    spans = _sdk_spans()
    assert (
        encode_spans(_carried(spans)).SerializeToString() == encode_spans(spans).SerializeToString()
    )


def _frames(*payloads: Any) -> io.BytesIO:
    data = b""
    for payload in payloads:
        body = marshal.dumps(payload)
        data += struct.pack(">I", len(body)) + body
    return io.BytesIO(data)


def _header() -> dict[str, object]:
    return {"version": 1, "resource": dict(RESOURCE.attributes), "schema_url": ""}


def test_the_relay_exports_every_span_it_reads_with_the_gateways_resource() -> None:
    spans = _sdk_spans()
    flat = [span_relay.flatten(s) for s in spans]
    memory = InMemorySpanExporter()
    count = span_relay.relay(_frames(_header(), flat[:1], flat[1:]), memory)
    received = memory.get_finished_spans()
    assert count == len(spans) == len(received)
    assert [s.name for s in received] == [s.name for s in spans]
    assert {s.resource.attributes["host.name"] for s in received} == {"gw-1"}


def test_a_truncated_last_frame_is_dropped_not_misread() -> None:
    flat = [span_relay.flatten(s) for s in _sdk_spans()]
    pipe = _frames(_header(), flat)
    cut = io.BytesIO(pipe.getvalue() + struct.pack(">I", 1000) + b"partial")
    memory = InMemorySpanExporter()
    assert span_relay.relay(cut, memory) == len(flat)


def test_a_pipe_that_does_not_start_with_the_header_is_refused() -> None:
    with pytest.raises(SystemExit, match="header"):
        span_relay.relay(_frames([("not", "a", "header")]), InMemorySpanExporter())
