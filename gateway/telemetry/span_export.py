"""The span relay's child process: OTLP export of the spans a gateway writes on its pipe.

`python -m gateway.telemetry.span_export` is started by span_relay.RelaySink with the
gateway's environment. It reads frames from stdin until the pipe closes, writes each as
the bytes of an OTLP ExportTraceServiceRequest and sends them with the SDK's OTLP/gRPC
exporter, which brings endpoint, TLS, headers, compression, timeout, retries and
reconnection from the OTEL_* variables.

Why its own encoder: the SDK's (`encode_spans`, then serializing) costs ~20 µs per span;
writing the bytes field by field, with what repeats (names, method or institution names,
statuses) encoded once, ~3 µs; and the relay competes for the same cores as the gateway.
The bytes are the same as the SDK's for the same spans (tests/unit/test_span_relay.py
holds it to that).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Final, Protocol

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.trace.export import SpanExportResult

from gateway.telemetry.span_relay import FRAME_VERSION, WARN_EVERY_S, Flat, read_frames

log = logging.getLogger("jisr.span_export")

NICENESS: Final = 10  # how much lower than the gateway's the relay's CPU priority is
MAX_FRAMES: Final = 64  # frames waiting for the exporter; beyond, frames are dropped
MAX_BATCH: Final = 512  # spans per export request
_CACHE_SIZE: Final = 4096
_HAS_IS_REMOTE: Final = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE: Final = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def _value(value: Any) -> AnyValue:
    """As the SDK encodes an attribute value (ValueError for a type it refuses)."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Sequence):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    if isinstance(value, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[KeyValue(key=str(k), value=_value(v)) for k, v in value.items()]
            )
        )
    raise ValueError(f"an attribute value of type {type(value).__name__}")


def _attributes(items: Iterable[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_value(value)) for key, value in items]


# -- protobuf wire format, for the few messages written here field by field --------------

_VARINTS: Final = tuple(bytes((n,)) for n in range(0x80))


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key_value(key: str, value: Any) -> bytes:
    """A span's attribute field, as the SDK encodes it; b"" (dropped, and said, without the
    value) for one the SDK would drop, such as an int out of int64's range."""
    try:
        return _field(_SPAN_ATTRIBUTE, KeyValue(key=key, value=_value(value)).SerializeToString())
    except (ValueError, TypeError, OverflowError) as exc:
        log.warning("span export: attribute %r dropped (%s)", key, type(exc).__name__)
        return b""


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


# Field tags (number << 3 | wire type) of ExportTraceServiceRequest, ResourceSpans,
# ScopeSpans (1: resource/scope, 2: spans, 3: schema_url), Span and Status.
_TAG_1: Final = b"\x0a"
_TAG_2: Final = b"\x12"
_TAG_3: Final = b"\x1a"
_SPAN_IDS: Final = b"\x0a\x10"  # trace_id (16 bytes)
_SPAN_ID: Final = b"\x12\x08"  # span_id (8 bytes)
_SPAN_STATE: Final = b"\x1a"  # trace_state
_SPAN_PARENT: Final = b"\x22\x08"  # parent_span_id (8 bytes)
_SPAN_NAME: Final = b"\x2a"
_SPAN_KIND: Final = b"\x30"
_SPAN_START: Final = b"\x39"  # fixed64
_SPAN_END: Final = b"\x41"  # fixed64
_SPAN_ATTRIBUTE: Final = b"\x4a"
_SPAN_STATUS: Final = b"\x7a"
_SPAN_FLAGS: Final = b"\x85\x01"  # field 16, fixed32, the last field
_STATUS_MESSAGE: Final = b"\x12"
_STATUS_CODE: Final = b"\x18"
_FLAGS_LOCAL: Final = _SPAN_FLAGS + _HAS_IS_REMOTE.to_bytes(4, "little")
_FLAGS_REMOTE: Final = _SPAN_FLAGS + (_HAS_IS_REMOTE | _IS_REMOTE).to_bytes(4, "little")


def _string(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode()) if text else b""


def _head(name: str, kind: int) -> bytes:
    """A span's name and kind (OTLP's kinds count from 1: UNSPECIFIED is 0)."""
    return _string(_SPAN_NAME, name) + _SPAN_KIND + _varint(kind + 1)


def _status(code: int, description: str) -> bytes:
    """Always present, as the SDK sets it (an empty message when unset)."""
    body = _string(_STATUS_MESSAGE, description)
    if code:
        body += _STATUS_CODE + _varint(code)
    return _field(_SPAN_STATUS, body)


class _Memo(dict[tuple[Any, ...], bytes]):
    """Encoded pieces by what they encode, made on first use (`make(*key)`); emptied when
    full, since unique values (audit record ids) would otherwise fill it."""

    def __init__(self, make: Callable[..., bytes]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: tuple[Any, ...]) -> bytes:
        if len(self) >= _CACHE_SIZE:
            self.clear()
        encoded = self[key] = self._make(*key)
        return encoded


class Encoder:
    """Flat spans (span_relay.flat) to the bytes of an OTLP ExportTraceServiceRequest,
    for one gateway's resource and scope: the same bytes as the SDK's encoder gives for the
    same spans. Spans are written field by field; whatever repeats (span names, attributes
    such as method or institution names, status) is encoded once and reused."""

    def __init__(self, head: Mapping[str, Any]) -> None:
        if head.get("version") != FRAME_VERSION:
            raise ValueError(f"expected a header of version {FRAME_VERSION}")
        resource = Resource(attributes=_attributes(head["resource"].items()))
        name, version, schema_url = head["scope"]
        scope = InstrumentationScope(name=name, version=version)
        self._resource = _field(_TAG_1, resource.SerializeToString())
        self._resource_schema = _string(_TAG_3, head.get("schema_url") or "")
        self._scope = _field(_TAG_1, scope.SerializeToString())
        self._scope_schema = _string(_TAG_3, schema_url or "")
        # Only strings, ints and bools are looked up here: values that compare equal, such
        # as 0.0 and -0.0, or (1,) and (1.0,), can encode differently.
        self._attributes = _Memo(lambda key, value, kind: _key_value(key, value))
        self._heads = _Memo(_head)
        self._statuses = _Memo(_status)
        self._last_trace: tuple[int | None, bytes] = (None, b"")

    def span(self, flat: Flat) -> bytes:
        """One span's message (without its own field tag)."""
        (
            name,
            trace_id,
            span_id,
            _,
            state,
            parent_id,
            parent_remote,
            kind,
            start,
            end,
            code,
            description,
            attributes,
        ) = flat
        if trace_id != self._last_trace[0]:  # a trace's spans mostly come one after another
            self._last_trace = (trace_id, _SPAN_IDS + trace_id.to_bytes(16, "big") + _SPAN_ID)
        ids = self._last_trace[1] + span_id.to_bytes(8, "big")
        if state:
            ids += _string(_SPAN_STATE, state)
        if parent_id:
            ids += _SPAN_PARENT + parent_id.to_bytes(8, "big")
        parts = [ids, self._heads[name, kind]]
        if start:
            parts.append(_SPAN_START + start.to_bytes(8, "little"))
        if end:
            parts.append(_SPAN_END + end.to_bytes(8, "little"))
        known = self._attributes
        for key, value in attributes.items():
            kind_of = type(value)
            if kind_of is str or kind_of is int or kind_of is bool:
                parts.append(known[key, value, kind_of])
            else:
                parts.append(_key_value(key, value))
        parts.append(self._statuses[code, description])
        parts.append(_FLAGS_REMOTE if parent_remote else _FLAGS_LOCAL)
        return b"".join(parts)

    def encode(self, flats: Sequence[Flat]) -> bytes:
        """The serialized ExportTraceServiceRequest of `flats`."""
        span = self.span
        parts = [self._scope]
        for flat in flats:
            encoded = span(flat)
            parts += (_TAG_2, _varint(len(encoded)), encoded)
        parts.append(self._scope_schema)
        scope_spans = b"".join(parts)
        resource_spans = b"".join(
            [self._resource, _field(_TAG_2, scope_spans), self._resource_schema]
        )
        return _field(_TAG_1, resource_spans)


TRACE_EXPORT: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _EncodedTraceStub:
    """TraceService's stub for requests already encoded: bytes in, bytes out."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(TRACE_EXPORT)


class FlatSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter (endpoint, TLS, headers, compression, timeout,
    retries and reconnection from the OTEL_* variables), given flat spans that our encoder
    turns into request bytes, sent as they are."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self._encoder = encoder
        # The SDK builds its client as `self._stub(self._channel)`, again on reconnection.
        self._stub = _EncodedTraceStub
        self._client = _EncodedTraceStub(self._channel)  # type: ignore[assignment]

    def _translate_data(self, data: Sequence[Flat]) -> bytes:  # type: ignore[override]
        return self._encoder.encode(data)

    def _count_data(self, data: Sequence[Flat]) -> int:  # type: ignore[override]
        return len(data)

    def export_flat(self, flats: Sequence[Flat]) -> SpanExportResult:
        result: SpanExportResult = self._export(flats)  # type: ignore[arg-type]
        return result


class FlatExporter(Protocol):
    def export_flat(self, flats: Sequence[Flat]) -> SpanExportResult: ...

    def shutdown(self) -> None: ...


class _Exporting:
    """Frames wait here for the exporter thread, so that the pipe is always read."""

    def __init__(self, exporter: FlatExporter) -> None:
        self._exporter = exporter
        self._frames: queue.Queue[list[Flat] | None] = queue.Queue(MAX_FRAMES)
        self.dropped = 0
        self._warned = -WARN_EVERY_S
        self._thread = threading.Thread(target=self._run, name="jisr-span-export")
        self._thread.start()

    def put(self, frame: list[Flat]) -> None:
        try:
            self._frames.put_nowait(frame)
        except queue.Full:
            self.dropped += len(frame)
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY_S:  # a collector outage must not flood logs
                self._warned = now
                log.warning("span export: collector too slow, %d spans dropped", self.dropped)

    def close(self) -> None:
        self._frames.put(None)
        self._thread.join()
        self._exporter.shutdown()

    def _run(self) -> None:
        while (frame := self._frames.get()) is not None:
            for start in range(0, len(frame), MAX_BATCH):
                try:
                    self._exporter.export_flat(frame[start : start + MAX_BATCH])
                except Exception as exc:
                    log.warning("span export: a batch was lost (%s)", type(exc).__name__)


def relay(
    pipe: IO[bytes], make_exporter: Callable[[Encoder], FlatExporter] = FlatSpanExporter
) -> int:
    """Export the spans read from `pipe` until it closes; how many were read."""
    frames = read_frames(pipe)
    head = next(frames, None)
    if not isinstance(head, dict):
        raise SystemExit("span export: the first frame must be the header")
    try:
        encoder = Encoder(head)
    except (KeyError, TypeError, ValueError) as exc:
        raise SystemExit(f"span export: bad header: {exc}") from None
    exporting = _Exporting(make_exporter(encoder))
    count = 0
    try:
        for frame in frames:
            exporting.put(frame)
            count += len(frame)
    finally:
        exporting.close()
    return count


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # Exports can wait; exchanges cannot. Below the gateway's priority, the relay uses the
    # cores the gateway leaves idle (waiting on disk or the network) rather than its own.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    # SCHED_BATCH: its wake-ups do not preempt the gateway's threads.
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    relay(sys.stdin.buffer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
