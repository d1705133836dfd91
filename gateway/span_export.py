"""The span relay's child process: OTLP export of the spans a gateway writes on its pipe.

`python -m gateway.span_export` is started by gateway.span_relay.RelaySink with the
gateway's environment. It reads frames from stdin until the pipe closes, encodes each into
an OTLP ExportTraceServiceRequest and sends it with the SDK's OTLP/gRPC exporter, which
brings endpoint, TLS, headers, compression, timeout and retries from the OTEL_* variables.

Why its own encoder: the SDK's (`encode_spans`) costs ~20 µs per span, the encoder below
~4 µs (attributes that repeat, such as method or institution names, are encoded once), and
the relay competes for the same cores as the gateway. The bytes are the same as the SDK's
for the same spans (tests/unit/test_span_relay.py holds it to that).
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

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.trace.export import SpanExportResult

from gateway.span_relay import FRAME_VERSION, WARN_EVERY_S, Flat, read_frames

log = logging.getLogger("jisr.span_export")

NICENESS: Final = 10  # how much lower than the gateway's the relay's CPU priority is
MAX_FRAMES: Final = 64  # frames waiting for the exporter; beyond, frames are dropped
MAX_BATCH: Final = 512  # spans per export request
_CACHE_SIZE: Final = 4096
_HAS_IS_REMOTE: Final = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE: Final = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def _value(value: Any) -> AnyValue:
    """As the SDK encodes an attribute value."""
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
    return AnyValue()


def _attributes(items: Iterable[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_value(value)) for key, value in items]


class Encoder:
    """Flat spans (gateway.span_relay.flat) to OTLP, for one gateway's resource and scope."""

    def __init__(self, head: Mapping[str, Any]) -> None:
        if head.get("version") != FRAME_VERSION:
            raise ValueError(f"expected a header of version {FRAME_VERSION}")
        self._resource = Resource(attributes=_attributes(head["resource"].items()))
        self._resource_schema = head.get("schema_url") or ""
        name, version, schema_url = head["scope"]
        self._scope = InstrumentationScope(name=name, version=version)
        self._scope_schema = schema_url
        self._cache: dict[tuple[str, Any, type], KeyValue] = {}

    def _key_value(self, key: str, value: Any) -> KeyValue:
        """Encoded once while it repeats; the cache is emptied when full (unique values,
        such as audit record ids, would otherwise fill it)."""
        slot = (key, value, type(value))
        try:
            return self._cache[slot]
        except KeyError:
            pass
        except TypeError:  # an unhashable value
            return KeyValue(key=key, value=_value(value))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        encoded = self._cache[slot] = KeyValue(key=key, value=_value(value))
        return encoded

    def request(self, flats: Sequence[Flat]) -> ExportTraceServiceRequest:
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add(schema_url=self._resource_schema)
        resource_spans.resource.CopyFrom(self._resource)
        scope_spans = resource_spans.scope_spans.add(schema_url=self._scope_schema)
        scope_spans.scope.CopyFrom(self._scope)
        spans = scope_spans.spans
        key_value = self._key_value
        for flat in flats:
            (name, trace_id, span_id, _, state, parent_id, parent_remote, kind) = flat[:8]
            (start, end, code, description, attributes) = flat[8:]
            span = spans.add(
                trace_id=trace_id.to_bytes(16, "big"),
                span_id=span_id.to_bytes(8, "big"),
                trace_state=state,
                parent_span_id=parent_id.to_bytes(8, "big") if parent_id else b"",
                name=name,
                kind=kind + 1,  # OTLP counts from SPAN_KIND_UNSPECIFIED
                start_time_unix_nano=start,
                end_time_unix_nano=end,
                flags=_HAS_IS_REMOTE | _IS_REMOTE if parent_remote else _HAS_IS_REMOTE,
            )
            span.attributes.extend([key_value(k, v) for k, v in attributes])
            status = span.status
            status.SetInParent()
            if code:
                status.code = code
            if description:
                status.message = description
        return request


class FlatSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter, given flat spans and our encoder."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self._encoder = encoder

    def _translate_data(self, data: Sequence[Flat]) -> ExportTraceServiceRequest:  # type: ignore[override]
        return self._encoder.request(data)

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
                self._exporter.export_flat(frame[start : start + MAX_BATCH])


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
