"""What crosses the pipe to the span relay: the same spans, encoded to the same OTLP."""

from __future__ import annotations

import io
import marshal
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from gateway.telemetry import span_export, span_relay, tracing

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


def _install(memory: InMemorySpanExporter, captured: Captured) -> None:
    """Spans go both to an SDK processor (into `memory`) and to `captured`."""
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


@pytest.fixture
def recorded() -> Recorded:
    """Spans of one exchange, as an SDK processor gets them and as the relay queues them."""
    memory, captured = InMemorySpanExporter(), Captured()
    _install(memory, captured)
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


def _encoded(flats: list[span_relay.Flat]) -> bytes:
    """What the relay process sends for `flats`, after both trips through marshal."""
    head = marshal.loads(marshal.dumps(span_relay.header(RESOURCE, SCOPE)))
    return span_export.Encoder(head).encode(marshal.loads(marshal.dumps(flats)))


def test_a_relayed_span_encodes_to_the_same_otlp_bytes_as_the_sdks(recorded: Recorded) -> None:
    direct = recorded.memory.get_finished_spans()
    assert len(direct) == len(recorded.captured.flats) == 3
    assert _encoded(recorded.captured.flats) == encode_spans(direct).SerializeToString()


def test_an_attribute_seen_again_is_encoded_the_same(recorded: Recorded) -> None:
    flats = recorded.captured.flats
    head = span_relay.header(RESOURCE, SCOPE)
    encoder = span_export.Encoder(head)
    first = encoder.encode(flats)
    assert encoder.encode(flats) == first == _encoded(flats)


def test_long_values_and_unhashable_attributes_encode_as_the_sdk_does() -> None:
    memory, captured = InMemorySpanExporter(), Captured()
    _install(memory, captured)
    try:
        with tracing.server_span("jisr.v1.AuditTrail/QueryAccess", [], {"long": "x" * 300}):
            for n in range(200):  # lengths past one varint byte, and a long request
                with tracing.span("jisr.adapter", {"list": [n, n + 1], "n": -n, "big": 2**40}):
                    pass
    finally:
        tracing.install(None)
    direct = memory.get_finished_spans()
    assert len(captured.flats) == len(direct) == 201
    assert _encoded(captured.flats) == encode_spans(direct).SerializeToString()


@dataclass
class Exported:
    """An exporter that keeps the batches it is given (the collector is not ours)."""

    batches: list[list[span_relay.Flat]] = field(default_factory=list)
    shut: bool = False

    def export_flat(self, flats: Sequence[span_relay.Flat]) -> SpanExportResult:
        self.batches.append(list(flats))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True


def _frames(*payloads: Any) -> io.BytesIO:
    data = b""
    for payload in payloads:
        body = marshal.dumps(payload)
        data += struct.pack(">I", len(body)) + body
    return io.BytesIO(data)


def _relay(pipe: io.BytesIO) -> tuple[int, Exported]:
    exported = Exported()
    return span_export.relay(pipe, lambda encoder: exported), exported


def test_the_relay_exports_every_span_it_reads_then_shuts_the_exporter(
    recorded: Recorded,
) -> None:
    flats = recorded.captured.flats
    count, exported = _relay(_frames(span_relay.header(RESOURCE, SCOPE), flats[:1], flats[1:]))
    assert count == len(flats)
    assert [f for batch in exported.batches for f in batch] == flats
    assert exported.shut


def test_a_big_frame_is_exported_in_batches_of_512(recorded: Recorded) -> None:
    flats = recorded.captured.flats * 400  # 1,200 spans
    _, exported = _relay(_frames(span_relay.header(RESOURCE, SCOPE), flats))
    assert [len(batch) for batch in exported.batches] == [512, 512, 176]


def test_a_truncated_last_frame_is_dropped_not_misread(recorded: Recorded) -> None:
    flats = recorded.captured.flats
    pipe = _frames(span_relay.header(RESOURCE, SCOPE), flats)
    cut = io.BytesIO(pipe.getvalue() + struct.pack(">I", 1000) + b"partial")
    count, exported = _relay(cut)
    assert count == len(flats)
    assert sum(len(batch) for batch in exported.batches) == len(flats)


def test_a_pipe_that_does_not_start_with_the_header_is_refused() -> None:
    with pytest.raises(SystemExit, match="header"):
        _relay(_frames([("not", "a", "header")]))


def test_a_header_of_another_version_is_refused() -> None:
    head = {**span_relay.header(RESOURCE, SCOPE), "version": 1}
    with pytest.raises(SystemExit, match="version"):
        _relay(_frames(head))


class _PipeThatSignalsItsEnd(io.BytesIO):
    """A pipe whose end sets `ended`: the relay has read everything there is."""

    def __init__(self, data: bytes, ended: threading.Event) -> None:
        super().__init__(data)
        self._ended = ended

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if not chunk:
            self._ended.set()
        return chunk


def test_a_collector_too_slow_costs_spans_not_an_unbounded_queue(
    recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    one_span = recorded.captured.flats[:1]
    frames = 200
    ended = threading.Event()
    exported = Exported()

    class Stalled(Exported):
        """Holds the first export until the whole pipe has been read."""

        def export_flat(self, flats: Sequence[span_relay.Flat]) -> SpanExportResult:
            ended.wait(30)
            return exported.export_flat(flats)

    pipe = _PipeThatSignalsItsEnd(
        _frames(span_relay.header(RESOURCE, SCOPE), *([one_span] * frames)).getvalue(), ended
    )
    with caplog.at_level("WARNING", logger="jisr.span_export"):
        read = span_export.relay(pipe, lambda encoder: Stalled())
    sent = sum(len(batch) for batch in exported.batches)
    assert read == frames
    # The exporter holds one frame, the queue MAX_FRAMES more; the rest are dropped.
    assert span_export.MAX_FRAMES <= sent <= span_export.MAX_FRAMES + 1
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1  # one warning, not one per frame


def test_values_that_compare_equal_but_encode_differently_are_not_confused() -> None:
    memory, captured = InMemorySpanExporter(), Captured()
    _install(memory, captured)
    try:
        with tracing.server_span("jisr.v1.RegistryExchange/GetHouseholdStatus", []):
            for value in (0.0, -0.0, (1,), (1.0,), (True,), 1, True, 1.0):
                with tracing.span("jisr.adapter", {"v": value}):
                    pass
    finally:
        tracing.install(None)
    direct = memory.get_finished_spans()
    assert _encoded(captured.flats) == encode_spans(direct).SerializeToString()


def test_an_attribute_the_sdk_cannot_encode_is_dropped_as_the_sdk_drops_it() -> None:
    memory, captured = InMemorySpanExporter(), Captured()
    _install(memory, captured)
    try:
        with (
            tracing.server_span("jisr.v1.RegistryExchange/VerifyEligibility", []),
            tracing.span("jisr.adapter", {"too big": 2**70, "kept": 1}),
        ):
            pass
    finally:
        tracing.install(None)
    direct = memory.get_finished_spans()
    assert _encoded(captured.flats) == encode_spans(direct).SerializeToString()
