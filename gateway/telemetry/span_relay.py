"""OTLP export of the gateway's spans from a child process, off the gateway's GIL.

Why: building the SDK's ReadableSpan, queueing it in a batch span processor and encoding
it into OTLP cost ~30 µs of Python per span, holding the GIL of the process that serves
the exchanges: a fifth of the gateway's throughput at 7 or 8 spans per exchange
(docs/performance-tracing.md). Here each finished span becomes one tuple of plain values
(~1 µs); a thread writes the queued tuples, every OTEL_BSP_SCHEDULE_DELAY ms or as soon as
OTEL_BSP_MAX_EXPORT_BATCH_SIZE are waiting, as one length-prefixed `marshal` frame on a
pipe. The child, `python -m gateway.telemetry.span_export`, encodes them into OTLP and sends them
with the SDK's OTLP exporter, configured by the same OTEL_* variables. It reads the pipe
until it closes, so it ends with its gateway, even one that was killed.

At most OTEL_BSP_MAX_QUEUE_SIZE spans wait in the gateway; beyond that, and while the
child is gone, spans are dropped and counted in a warning. A dead child is started again,
at most every RESTART_S seconds. `JISR_OTLP_RELAY=0` exports in the gateway's own process
instead (docs/observability.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import os
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, Final

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from gateway.telemetry import tracing

log = logging.getLogger("jisr.span_relay")

RESTART_S: Final = 5.0
PIPE_BYTES: Final = 1 << 20  # Linux's default ceiling for an unprivileged process
STOP_S: Final = 10.0  # how long shutdown waits for the child to export what it holds
WARN_EVERY_S: Final = 10.0
_LENGTH: Final = struct.Struct(">I")
FRAME_VERSION: Final = 3
# The SDK's batch span processor defaults, read from the same variables.
_DEFAULTS: Final = {
    "OTEL_BSP_SCHEDULE_DELAY": 5000,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
    "OTEL_BSP_MAX_QUEUE_SIZE": 2048,
}

Flat = tuple[Any, ...]


# -- the wire between gateway and child: marshal frames of plain values ------------------


def flat(span: tracing.Span) -> Flat:
    """A finished span as plain values marshal can carry (same interpreter on both ends).
    The attributes are the span's own dict, which nothing changes once the span ended."""
    trace_ = span.trace
    return (
        span.name,
        trace_.trace_id,
        span.span_id,
        trace_.flags,
        trace_.state_header,
        span.parent_id,
        span.parent_remote,
        span.kind,
        span.start,
        span.end,
        span.code,
        span.message,
        span.attributes,
    )


def header(resource: Resource, scope: InstrumentationScope) -> dict[str, Any]:
    """The first frame: what every span of this gateway shares."""
    return {
        "version": FRAME_VERSION,
        "resource": dict(resource.attributes),
        "schema_url": resource.schema_url,
        "scope": (scope.name, scope.version or "", scope.schema_url or ""),
    }


def write_frame(pipe: IO[bytes], payload: Any) -> None:
    data = marshal.dumps(payload)
    pipe.write(_LENGTH.pack(len(data)))
    pipe.write(data)
    pipe.flush()


def read_frames(pipe: IO[bytes]) -> Iterator[Any]:
    """Frames until the pipe closes (a truncated last frame is dropped)."""
    while True:
        head = pipe.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (size,) = _LENGTH.unpack(head)
        data = pipe.read(size)
        if len(data) < size:
            return
        yield marshal.loads(data)


# -- the gateway's side ------------------------------------------------------------------


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return max(1, int(env.get(name, "") or _DEFAULTS[name]))
    except ValueError:
        return _DEFAULTS[name]


class RelaySink:
    """A tracing.SpanSink: queues spans as tuples, a thread ships them to the relay child."""

    def __init__(
        self,
        resource: Resource,
        scope: InstrumentationScope,
        *,
        argv: Sequence[str] | None = None,
        restart_s: float = RESTART_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self._delay_s = _env_int(env, "OTEL_BSP_SCHEDULE_DELAY") / 1000.0
        self._max_queue = _env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE")
        self._batch = min(self._max_queue, _env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"))
        self._header = header(resource, scope)
        self._argv = list(argv or [sys.executable, "-m", "gateway.telemetry.span_export"])
        self._restart_s = restart_s
        self._queue: deque[Flat] = deque()
        self._wake = threading.Event()
        self._ship_lock = threading.Lock()
        self._stopping = False
        self._dropped = 0
        self._warned = -WARN_EVERY_S
        self._child: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._start_child()
        self._thread = threading.Thread(target=self._run, name="jisr-span-relay", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        """The relay child's process id (None once shut down)."""
        child = self._child
        return child.pid if child is not None else None

    @property
    def dropped(self) -> int:
        return self._dropped

    def put(self, span: tracing.Span) -> None:
        """Called on the request path: one tuple, one append."""
        queue = self._queue
        if len(queue) >= self._max_queue or self._stopping:
            self._dropped += 1
            return
        queue.append(flat(span))
        if len(queue) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        """Ship what is queued now (tests, shutdown)."""
        self._ship()

    def shutdown(self) -> None:
        """Ship what is queued, close the pipe; the child exports what it holds and exits
        (or is killed after STOP_S)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(STOP_S)
        self._ship()
        with self._ship_lock:
            child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
        try:
            child.wait(STOP_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(STOP_S)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            self._ship()

    def _ship(self) -> None:
        with self._ship_lock:
            queue = self._queue
            spans = [queue.popleft() for _ in range(len(queue))]
            if spans:
                self._write(spans)

    def _start_child(self) -> None:
        self._started = time.monotonic()
        # Its own session: a Ctrl-C or SIGTERM sent to the gateway's process group does not
        # cut it short; it exports what the gateway flushed, then sees the pipe close.
        child = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
        )
        assert child.stdin is not None
        # A pipe that holds a few frames: the relay thread writes one without waiting for
        # the child (at a lower priority) to be scheduled and read the first 64 KiB.
        with contextlib.suppress(OSError, AttributeError):  # F_SETPIPE_SZ: Linux only
            fcntl.fcntl(child.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        with contextlib.suppress(OSError):  # a dead child is found on the next write
            write_frame(child.stdin, self._header)
        self._child = child

    def _write(self, spans: list[Flat]) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            if child is None or time.monotonic() - self._started < self._restart_s:
                self._drop(len(spans))
                return
            log.warning("span relay: the relay process is gone; starting it again")
            self._start_child()
            child = self._child
        assert child is not None
        assert child.stdin is not None
        try:
            write_frame(child.stdin, spans)
        except (OSError, ValueError):
            self._drop(len(spans))

    def _drop(self, count: int) -> None:
        self._dropped += count
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            log.warning("span relay: %d spans dropped so far (relay process down)", self._dropped)
