"""The door: where a call waits for its request, on the event loop, before it may hold a
thread.

The exchange pipeline is synchronous, CPU-bound Python (and blocks on the audit's group
commit and on remote backends), so it runs on worker threads. On grpc's sync server a
unary call takes its worker thread *before* its request message arrives: four
headers-only calls from any certificate holder held every worker and stopped the gateway
serving anyone, health checks included. Here the server is `grpc.aio`: a call costs a
coroutine until its message is in, and only then is the pipeline handed to a worker.

What no partner may hold, whatever it sends (docs/security.md, "Limits"):
- a request must arrive within `request_timeout_s` of the call's headers (and a stream's
  next batch within `stream_idle_s`): else DEADLINE_EXCEEDED REQUEST_TIMEOUT, recorded;
- an institution has at most `calls_per_institution` calls open (arrived or not) and at
  most `streams_per_institution` batch streams: else RESOURCE_EXHAUSTED TOO_MANY_CALLS;
- an institution has at most as many unary calls *on workers* as there are workers: the
  rest wait on the event loop, so one partner's flood queues behind itself, not in front
  of the others; batch streams run on workers of their own;
- a request message is at most `max_message_bytes`: else RESOURCE_EXHAUSTED
  MESSAGE_TOO_LARGE, recorded (grpc itself refuses four times that, without details);
- health checking and reflection answer on the event loop, needing no worker at all.

The pipeline's code keeps the sync `grpc.ServicerContext` interface: `ThreadContext`
stands in for it on the worker, and an abort there is carried back to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
import traceback
from collections import defaultdict, deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio

from gateway.audit.writer import APPEND_TIMEOUT_S, Pending
from gateway.base.errors import DEADLINE_SLACK_S, ExchangeError, Reason, caller_ended
from gateway.base.wire import REGISTRY_EVENTS, method_path
from gateway.engine.steps import OFFLOAD, Deferred, Sent, Steps, drive, thrown
from gateway.services.edge import grpc_status
from gateway.services.quotas import Quotas
from gateway.services.rates import Rates

log = logging.getLogger("jisr.door")

T = TypeVar("T")
Trailers = tuple[tuple[str, str | bytes], ...]
# What the door reports when it refuses a call before the pipeline runs: method, the
# institution of the certificate, the refusal. The service records it in the audit.
Refused = Callable[[str, str, ExchangeError], None]

# grpc's own ceiling on a request message: this many times the documented limit, so that
# between the two a partner gets MESSAGE_TOO_LARGE with details from the door.
GRPC_CEILING_FACTOR = 4
# grpc's default hard limit on calls arrived but not yet taken by the application.
GRPC_PENDING_HARD_LIMIT = 3_000
# Request metadata (the request token, traceparent, grpc's own headers): one fixed limit,
# soft = hard, so grpc never refuses some calls and not others (its default soft limit
# rejects at random between 8 and 16 KiB).
MAX_METADATA_BYTES = 16 * 1024
# How long a worker that read the end of a stream waits to learn whether it was the
# caller's cancel (delivered just after) rather than a normal end; once per stream.
SETTLE_S = 0.05
# Answers of a response stream on their way from the loop at once, at most, each waiting
# for its record: the stream's thread decides the next batches meanwhile, so a commit that
# takes long (the audit file's checkpoint, another process holding its write lock) does
# not stall it (docs/performance.md, "The batch"). They leave in order.
SEND_WINDOW = 3
# The shortest wait for a stream's first request, however late a worker started reading.
MIN_WAIT_S = 0.05


@dataclass(frozen=True, slots=True)
class Limits:
    """What one institution may hold, and how long a request may take to arrive."""

    workers: int = 4
    stream_workers: int = 8
    request_timeout_s: float = 10.0
    stream_idle_s: float = 60.0
    calls_per_institution: int = 256
    streams_per_institution: int = 2
    subscription_workers: int = 16
    subscriptions_per_institution: int = 4
    max_message_bytes: int = 1024 * 1024
    max_stream_s: float = 3600.0
    max_stream_batches: int = 10_000
    max_concurrent_rpcs: int = 16_384

    @property
    def pending_calls(self) -> int:
        """grpc's queue of calls not yet taken: max_concurrent_rpcs, never below grpc's
        own hard limit (a small max_concurrent_rpcs must not cancel more than grpc would)."""
        return max(self.max_concurrent_rpcs, GRPC_PENDING_HARD_LIMIT)

    def server_options(self, *, reuse_port: bool = False) -> list[tuple[str, Any]]:
        """grpc's own limits, set deliberately (docs/security.md, "Limits"). The port is
        shared (SO_REUSEPORT) only among the workers of one `jisr serve --processes N`,
        which reserved it first; otherwise a taken port is an error, not a silent share.

        Calls the event loop has not taken yet wait in grpc's own queue; past 1,000 of them
        grpc cancels new ones at random, and all past 3,000 (its defaults), with a bare
        CANCELLED. A burst the loop is still taking in is not a fault of the caller: the
        queue holds as many calls as the server may have open at once, and the door then
        answers each with its documented reason (TOO_MANY_CALLS, RATE_LIMITED...). grpc
        still cancels a call left there 30 s (grpc.server_max_unrequested_time_in_server)."""
        return [
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.server.max_pending_requests", self.pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", self.pending_calls),
            ("grpc.max_receive_message_length", GRPC_CEILING_FACTOR * self.max_message_bytes),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ]


class Aborted(Exception):  # noqa: N818 - the sync API's abort, carried to the loop
    """`abort_with_status` called on a worker: the status to send from the loop."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Trailers) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailers = trailers


class ThreadContext:
    """The sync `grpc.ServicerContext` calls the pipeline makes, on a worker thread.

    A read or write that finds the call gone raises the `ExchangeError` saying why (the
    caller cancelled or let its deadline pass, the gateway is stopping), so the pipeline
    records the end with its reason; a write the caller does not take within
    `write_timeout` seconds raises RESPONSE_NOT_READ."""

    def __init__(
        self,
        context: aio.ServicerContext[Any, Any],
        loop: asyncio.AbstractEventLoop,
        *,
        write_timeout: float,
        ended: Callable[[], ExchangeError],
    ) -> None:
        self._context = context
        self._loop = loop
        self._write_timeout = write_timeout
        self.ended = ended
        self._metadata = tuple(context.invocation_metadata() or ())
        self._auth: dict[str, list[bytes]] = context.auth_context()
        self.trailers: Trailers = ()
        # Set on the loop when grpc cancels the call's handler (the caller cancelled, its
        # deadline passed, or the server stopped): the worker cannot see it any other way.
        self.gone = threading.Event()
        # The messages of a response stream sent from the loop once their records are
        # durable, oldest first, while they are on their way (gateway/engine/batch.py, at
        # most SEND_WINDOW); kept and read on the worker.
        self._sending: deque[Future[None]] = deque()
        # Set (from the loop) once the stream has dropped what was on its way: an answer
        # whose turn comes after that is neither made nor sent.
        self._dropped = False

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def invocation_metadata(self) -> Trailers:
        return self._metadata

    def time_remaining(self) -> float | None:
        remaining: float | None = self._context.time_remaining()
        return remaining

    def is_active(self) -> bool:
        remaining = self._context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return not (self.gone.is_set() or expired or self._context.done())

    def _settled_active(self) -> bool:
        """Whether the call is still alive once the loop has handled what it already
        knows: a cancelled call's read returns EOF just before its handler is cancelled."""
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result()
        self.gone.wait(SETTLE_S)
        return self.is_active()

    def set_trailing_metadata(self, metadata: Trailers) -> None:
        self.trailers = tuple(metadata)

    def abort_with_status(self, status: grpc.Status) -> None:
        raise Aborted(status.code, status.details, tuple(status.trailing_metadata or ()))

    def write(self, message: bytes) -> None:
        """Send one message of a response stream: wait until grpc has taken it, at most
        `write_timeout` seconds (a caller that stops reading holds no worker for longer)."""
        future = asyncio.run_coroutine_threadsafe(self._context.write(message), self._loop)
        self._wait_sent(future, self._write_timeout)

    def send_when_recorded(self, message: Deferred) -> None:
        """Send `message` from the loop once its record has settled and the message before
        it has gone (its bytes are made then); `settle` waits for all, `make_room` for the
        oldest. While they are on their way, a `read` that would wait for the next request
        ends at once if one fails (a caller that waits for these answers before sending
        more would otherwise wait out the idle timeout)."""
        before = self._sending[-1] if self._sending else None
        self._sending.append(
            asyncio.run_coroutine_threadsafe(self._send_when_recorded(message, before), self._loop)
        )

    async def _send_when_recorded(self, message: Deferred, before: Future[None] | None) -> None:
        await _durable(message.pending)
        if before is not None:
            await asyncio.wrap_future(before)  # in order; raises what ended the one before
        if self._dropped:  # the stream ended while this one waited its turn
            raise asyncio.CancelledError
        body = message.finish()  # raises the record's refusal
        try:
            async with asyncio.timeout(self._write_timeout):
                await self._context.write(body)
        except TimeoutError:
            raise _not_read(self._write_timeout) from None

    def settle(self) -> None:
        """Wait until every message on its way from the loop has gone: for each, its
        record's wait and then `write_timeout` at most. Raises as `write` does, or a
        message's own refusal (its record could not be made); the ones after it are
        dropped then."""
        while self._sending:
            self._wait_oldest()

    def make_room(self) -> None:
        """Wait until fewer than SEND_WINDOW messages are on their way (as `settle`); take
        note of those already gone, so that a failed one ends the stream at once."""
        while self._sending and (len(self._sending) >= SEND_WINDOW or self._sending[0].done()):
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        try:
            self._wait_sent(self._sending.popleft(), APPEND_TIMEOUT_S + self._write_timeout)
        except BaseException:
            self.drop_sending()  # each of the others waits on this one: none can go now
            raise

    def drop_sending(self) -> None:
        """The stream ended another way: the messages on their way, if any, are not sent
        (one whose turn has come on the loop already may still go: it counts as sent)."""
        if not self._sending:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop runs nothing more
            self._loop.call_soon_threadsafe(self._drop)
        while self._sending:
            self._sending.pop().cancel()

    def _drop(self) -> None:
        self._dropped = True

    def _wait_sent(self, sending: Future[None], timeout: float) -> None:
        try:
            sending.result(timeout)
        except ExchangeError:
            raise
        except TimeoutError:
            sending.cancel()
            raise _not_read(self._write_timeout) from None
        except Exception:
            if self._settled_active():
                raise
            raise self.ended() from None

    def read(self, timeout: float) -> bytes | None:
        """The next request message of a stream, None at its end; REQUEST_TIMEOUT if none
        comes within `timeout` seconds. A message still on its way that fails meanwhile
        ends the wait with its own error (as `settle` raises it)."""
        sending = tuple(self._sending)
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(_read_unless_failed(self._context, sending), timeout), self._loop
        )
        try:
            message = future.result()
        except TimeoutError:
            raise _request_timeout() from None
        except Exception:
            if self._settled_active():
                raise
            raise self.ended() from None
        if message is _SEND_FAILED:
            self.settle()  # raises what ended it
        if message is aio.EOF:
            if not self._settled_active():
                raise self.ended()
            return None
        return bytes(message)


_SEND_FAILED = object()  # what `_read_unless_failed` returns when the send failed first


async def _read_unless_failed(
    context: aio.ServicerContext[Any, Any], sending: tuple[Future[None], ...]
) -> Any:
    """The next request, unless a message on its way fails first (`_SEND_FAILED`)."""
    if not sending:
        return await context.read()
    reading = asyncio.ensure_future(context.read())
    waiting: set[asyncio.Future[Any]] = {reading}
    for message in sending:
        sent = asyncio.wrap_future(message)
        sent.add_done_callback(_settled)  # its failure is raised by `settle`, not from here
        waiting.add(sent)
    try:
        while True:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if reading in done:
                return await reading
            if any(f.cancelled() or f.exception() is not None for f in done):
                reading.cancel()
                return _SEND_FAILED
    except BaseException:
        reading.cancel()
        raise


def _request_timeout() -> ExchangeError:
    return ExchangeError(
        Reason.REQUEST_TIMEOUT,
        "the request did not arrive in time",
    )


def _not_read(seconds: float) -> ExchangeError:
    return ExchangeError(
        Reason.RESPONSE_NOT_READ,
        f"the caller did not read the response stream for {seconds:g} s",
    )


def _too_many(what: str) -> ExchangeError:
    return ExchangeError(
        Reason.TOO_MANY_CALLS,
        f"this institution has too many {what} open; retry later",
    )


def _rate_limited(wait: float) -> ExchangeError:
    return ExchangeError(
        Reason.RATE_LIMITED,
        f"this institution's rate of calls is spent; the next is admitted in {wait:.3f} s",
        retry_after_s=wait,
    )


def _quota_exceeded(wait: float) -> ExchangeError:
    return ExchangeError(
        Reason.QUOTA_EXCEEDED,
        "this institution's daily quota of calls is used up; it starts again at 00:00 UTC",
        retry_after_s=wait,
    )


def _busy() -> ExchangeError:
    return ExchangeError(
        Reason.GATEWAY_BUSY,
        "the gateway has as many streams open as it serves at once; retry later",
    )


def _stopping() -> ExchangeError:
    return ExchangeError(
        Reason.GATEWAY_STOPPING,
        "the gateway stopped before the call could end; retry",
    )


def _too_large(limit: int) -> ExchangeError:
    return ExchangeError(
        Reason.MESSAGE_TOO_LARGE,
        f"a request message is at most {limit} bytes",
    )


def _too_long(limit: str) -> ExchangeError:
    """A batch stream past its life or its number of batches (`limit` says which)."""
    return ExchangeError(
        Reason.STREAM_TOO_LONG,
        f"a batch stream {limit}; the batches answered stand, open another stream for the rest",
    )


def _malformed(details: str) -> ExchangeError:
    return ExchangeError(Reason.MALFORMED_REQUEST, details)


class _Quiet:
    """At most one log line per `every` seconds per key, saying how many were folded in."""

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._last: dict[str, float] = {}
        self._folded: dict[str, int] = defaultdict(int)

    def warn(self, key: str, message: str, **extra: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self._every) < self._every:
            self._folded[key] += 1
            return
        self._last[key] = now
        folded, self._folded[key] = self._folded[key], 0
        log.warning(message, extra={**extra, "suppressed": folded})


# Lanes a call is admitted to: a unary call, a batch stream or audit query, a registry
# events subscription (long-lived: a pool and a per-institution limit of its own).
CALL = "call"
STREAM = "stream"
SUBSCRIPTION = "subscription"
# Methods admitted as subscriptions.
SUBSCRIPTION_METHODS = frozenset({method_path(REGISTRY_EVENTS, "Subscribe")})


class _Counts:
    """Calls and streams open per institution (touched on the event loop only)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.lanes: dict[str, dict[str, int]] = {
            STREAM: defaultdict(int),
            SUBSCRIPTION: defaultdict(int),
        }
        self.all: dict[str, int] = {STREAM: 0, SUBSCRIPTION: 0}
        self.on_workers: dict[str, asyncio.Semaphore] = {}


class Door:
    """Wraps the service's sync handlers into grpc.aio handlers behind the limits."""

    def __init__(
        self,
        limits: Limits,
        refused: Refused,
        rates: Rates | None = None,
        quotas: Quotas | None = None,
        overloaded: Refused | None = None,
    ) -> None:
        self.limits = limits
        self._refused = refused
        self._overloaded = overloaded  # counts a flood's refusal (metrics), on the loop
        self._rates = rates or Rates({})
        self._quotas = quotas
        self._workers = ThreadPoolExecutor(limits.workers, thread_name_prefix="jisr")
        self._streamers = ThreadPoolExecutor(limits.stream_workers, thread_name_prefix="jisr-s")
        self._subscribers = ThreadPoolExecutor(
            limits.subscription_workers, thread_name_prefix="jisr-sub"
        )
        self._counts = _Counts()
        self._quiet = _Quiet()
        self._stop_at: float | None = None  # read by workers; set once, by `stopping`

    def stopping(self, grace: float | None) -> None:
        """The server is stopping: a call still running `grace` seconds from now is ended
        by the gateway (GATEWAY_STOPPING), not by its caller."""
        self._stop_at = time.monotonic() + (grace or 0.0) - DEADLINE_SLACK_S

    def close(self) -> None:
        """Wait for the workers: a call still queued for one starts, finds itself gone and
        records GATEWAY_STOPPING, so that no call admitted ends without its record."""
        self._workers.shutdown(wait=True)
        self._streamers.shutdown(wait=True)
        self._subscribers.shutdown(wait=True)

    def wrap(self, inner: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        """The same service, each method behind the door."""
        return _Wrapped(self, inner)

    def _ended(self, context: aio.ServicerContext[Any, Any]) -> ExchangeError:
        """Why a call ended under the pipeline's feet."""
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            return _stopping()
        return caller_ended(context.time_remaining())

    def _thread_context(self, context: aio.ServicerContext[Any, Any]) -> ThreadContext:
        return ThreadContext(
            context,
            asyncio.get_running_loop(),
            write_timeout=self.limits.stream_idle_s,
            ended=lambda: self._ended(context),
        )

    # -- the three shapes of method ----------------------------------------------------

    async def unary(
        self,
        method: str,
        behaviour: Callable[[bytes, ThreadContext], bytes],
        context: aio.ServicerContext[Any, Any],
    ) -> bytes | None:
        """A unary call run on the event loop itself, waiting for its audit record without
        a thread; it moves to a worker where its steps say it may block (OFFLOAD).

        Handing every call to a worker thread cost ~1 ms of CPU per call here (the loop,
        grpc's poller and the workers passing the GIL around: docs/performance.md); the
        pipeline's own CPU work is a few hundred microseconds, so the loop does it."""
        steps = getattr(behaviour, "steps", None) or _offloaded(behaviour)
        institution = _institution(context)
        refusal = self._admit(institution, CALL)
        if refusal is not None:
            await self._refuse(context, method, institution, refusal)
            return None
        handed = False
        try:
            raw = await self._one_message(context, method, institution)
            if raw is None:
                return None
            thread_context = self._thread_context(context)
            own = contextvars.Context()  # this call's spans and subjects, apart from others'
            work = steps(raw, thread_context)
            try:
                step = own.run(next, work)
                while isinstance(step, Pending):
                    await _durable(step)
                    step = own.run(work.send, None)
            except StopIteration as done:
                context.set_trailing_metadata(thread_context.trailers)
                body: bytes = done.value
                return body
            except Aborted as aborted:
                await context.abort(aborted.code, aborted.details, aborted.trailers)
                return None
            except asyncio.CancelledError:
                own.run(work.close)  # a record already submitted stands (docs/errors.md)
                raise
            except Exception as exc:  # the pipeline answers its own faults: a last resort
                await _fault(context, exc)
                return None
            handed = True
            return await self._rest_on_worker(
                method, institution, work, own=own, context=context, on=thread_context
            )
        finally:
            if not handed:
                self._release(institution, CALL)

    async def _rest_on_worker(
        self,
        method: str,
        institution: str,
        work: Steps[bytes],
        *,
        own: contextvars.Context,
        context: aio.ServicerContext[Any, Any],
        on: ThreadContext,
    ) -> bytes | None:
        """The rest of a call's steps, on a worker within the institution's share. The
        call's admission and worker slot are given back when the worker is done with it;
        a call cancelled before a worker took it still ends on one, recording why."""
        loop = asyncio.get_running_loop()
        slots = self._slot(institution)
        try:
            await slots.acquire()
        except asyncio.CancelledError:
            on.gone.set()
            ending = loop.run_in_executor(
                self._workers, own.run, self._end, method, institution, work, on
            )
            ending.add_done_callback(lambda _: self._release(institution, CALL))
            raise
        try:
            job = loop.run_in_executor(
                self._workers, own.run, self._finish, method, institution, work, on
            )
        except BaseException:
            slots.release()
            self._release(institution, CALL)
            raise

        def done(_: object) -> None:
            slots.release()
            self._release(institution, CALL)

        job.add_done_callback(done)
        result = await _outcome(job, context, on)
        if result is not None:
            context.set_trailing_metadata(on.trailers)
        return result

    def _finish(
        self, method: str, institution: str, work: Steps[bytes], on: ThreadContext
    ) -> bytes | None:
        """On a worker: the call's remaining steps, unless it is gone already."""
        if on.gone.is_set():
            self._end(method, institution, work, on)
            return None
        return drive(work)

    def _end(self, method: str, institution: str, work: Steps[bytes], on: ThreadContext) -> None:
        """On a worker: end a call that is gone, letting its steps record why. Steps not yet
        past authentication raise the error back; the door records it then."""
        try:
            drive(thrown(work, on.ended()))
        except ExchangeError as unheard:
            self._refused(method, institution, unheard)
        except Aborted:
            pass  # recorded; there is no one to answer
        except Exception as exc:  # logged by type and place: the message may quote data
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("ending a call failed: %s at %s:%s", type(exc).__name__, *frame[:2])

    async def unary_stream(
        self,
        method: str,
        behaviour: Callable[[bytes, ThreadContext], Generator[bytes, None, None]],
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        """A response stream (QueryAccess, Subscribe): admitted to its lane, its request
        read on the loop, then produced on a worker of its own."""
        institution = _institution(context)
        lane = SUBSCRIPTION if method in SUBSCRIPTION_METHODS else STREAM
        refusal = self._admit(institution, lane)
        if refusal is not None:
            await self._refuse(context, method, institution, refusal)
            return
        handed = False
        try:
            raw = await self._one_message(context, method, institution)
            if raw is None:
                return
            on = self._thread_context(context)
            handed = True
        finally:
            if not handed:
                self._release(institution, lane)
        await self._stream_on_worker(institution, context, on, lambda: behaviour(raw, on), lane)

    async def stream_stream(
        self,
        method: str,
        behaviour: Callable[[Iterator[bytes], ThreadContext], Generator[Sent, None, None]],
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        """A batch stream: admitted, then read and answered on a stream worker of its own;
        its first request is due `request_timeout_s` after its headers."""
        institution = _institution(context)
        refusal = self._admit(institution, STREAM)
        if refusal is not None:
            await self._refuse(context, method, institution, refusal)
            return
        try:
            on = self._thread_context(context)
            requests = _Requests(on, self.limits)
        except BaseException:
            self._release(institution, STREAM)
            raise
        await self._stream_on_worker(
            institution, context, on, lambda: behaviour(requests, on), STREAM
        )

    async def _stream_on_worker(
        self,
        institution: str,
        context: aio.ServicerContext[Any, Any],
        on: ThreadContext,
        handler: Callable[[], Generator[Sent, None, None]],
        lane: str,
    ) -> None:
        """Run a stream's handler on a stream worker, writing what it yields. Admission
        keeps open streams within the stream workers, so a stream never waits for one."""
        loop = asyncio.get_running_loop()
        pool = self._subscribers if lane == SUBSCRIPTION else self._streamers
        try:
            job = loop.run_in_executor(pool, _pump, handler, on)
        except BaseException:
            self._release(institution, lane)
            raise
        job.add_done_callback(lambda _: self._release(institution, lane))
        if await _outcome(job, context, on) is not None:
            context.set_trailing_metadata(on.trailers)

    # -- admission ---------------------------------------------------------------------

    def _admit(self, institution: str, lane: str) -> ExchangeError | None:
        """Count the call in, or say why not: the concurrency limits first, then the rate
        and the quota, so that a call refused for one spends nothing of the others."""
        counts, limits = self._counts, self.limits
        if counts.calls[institution] >= limits.calls_per_institution:
            return _too_many("calls")
        if lane != CALL:
            mine, most = (
                (limits.subscriptions_per_institution, limits.subscription_workers)
                if lane == SUBSCRIPTION
                else (limits.streams_per_institution, limits.stream_workers)
            )
            if counts.lanes[lane][institution] >= mine:
                return _too_many("subscriptions" if lane == SUBSCRIPTION else "streams")
            if counts.all[lane] >= most:
                return _busy()
        if institution:
            wait = self._rates.admit(institution)
            if wait > 0.0:
                return _rate_limited(wait)
            wait = self._quotas.admit(institution) if self._quotas is not None else 0.0
            if wait > 0.0:
                return _quota_exceeded(wait)
        if lane != CALL:
            counts.lanes[lane][institution] += 1
            counts.all[lane] += 1
        counts.calls[institution] += 1
        return None

    def _release(self, institution: str, lane: str) -> None:
        """Called on the loop, or from a job's done callback (which asyncio runs there)."""
        self._counts.calls[institution] -= 1
        if lane != CALL:
            self._counts.lanes[lane][institution] -= 1
            self._counts.all[lane] -= 1

    def _slot(self, institution: str) -> asyncio.Semaphore:
        """An institution's share of the workers: one fewer than there are (at least one),
        so one partner's calls never hold every worker and the executor's queue never
        holds more than that of one partner."""
        slots = self._counts.on_workers.get(institution)
        if slots is None:
            share = max(1, self.limits.workers - 1)
            slots = self._counts.on_workers[institution] = asyncio.Semaphore(share)
        return slots

    async def _one_message(
        self, context: aio.ServicerContext[Any, Any], method: str, institution: str
    ) -> bytes | None:
        """The unary request, exactly one message, in time and within the size limit;
        None when the call was refused (the refusal is sent and recorded)."""
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):  # no task of its own
                message = await context.read()
                extra = aio.EOF if message is aio.EOF else await context.read()
        except TimeoutError:
            await self._refuse(context, method, institution, _request_timeout())
            return None
        if message is aio.EOF:
            await self._refuse(context, method, institution, _malformed("no request message"))
            return None
        if extra is not aio.EOF:
            await self._refuse(
                context, method, institution, _malformed("a unary method takes one message")
            )
            return None
        raw = bytes(message)
        if len(raw) > self.limits.max_message_bytes:
            await self._refuse(
                context, method, institution, _too_large(self.limits.max_message_bytes)
            )
            return None
        return raw

    async def _refuse(
        self,
        context: aio.ServicerContext[Any, Any],
        method: str,
        institution: str,
        error: ExchangeError,
    ) -> None:
        """Answer a refusal made at the door; record it unless it is an overload (a flood
        of _OVERLOAD refusals is counted in the metrics, each, and logged, at most once
        per 10 s per institution)."""
        if error.reason in _OVERLOAD:
            if self._overloaded is not None:
                self._overloaded(method, institution, error)
            self._quiet.warn(
                f"busy:{institution}",
                "refused at the door",
                institution=institution,
                reason=error.reason.value,
            )
        else:
            log.info(
                "refused at the door",
                extra={"method": method, "institution": institution, "reason": error.reason},
            )
            if institution and not context.done():
                loop = asyncio.get_running_loop()
                async with self._slot(institution):
                    await loop.run_in_executor(
                        self._workers, self._refused, method, institution, error
                    )
        status = grpc_status(error)
        await context.abort(status.code, status.details, tuple(status.trailing_metadata))


# Refusals that a flood produces: counted and logged at a bounded rate, never recorded.
_OVERLOAD = frozenset(
    {Reason.TOO_MANY_CALLS, Reason.GATEWAY_BUSY, Reason.RATE_LIMITED, Reason.QUOTA_EXCEEDED}
)


class _Requests(Iterator[bytes]):
    """A batch stream's request messages, read from the loop by the stream's worker. The
    first is due `request_timeout_s` after the call's headers, the next ones within
    `stream_idle_s` of the one before; `max_stream_batches` of them at most."""

    def __init__(self, context: ThreadContext, limits: Limits) -> None:
        self._context = context
        self._limits = limits
        self._first_due: float | None = time.monotonic() + limits.request_timeout_s
        self._ends_at = time.monotonic() + limits.max_stream_s
        self._read = 0
        self._lasts = f"lasts at most {limits.max_stream_s:g} s"

    def __next__(self) -> bytes:
        left = self._ends_at - time.monotonic()
        if left <= 0:
            raise _too_long(self._lasts)
        timeout = min(self._limits.stream_idle_s, left)
        if self._first_due is not None:
            timeout = max(MIN_WAIT_S, min(self._first_due - time.monotonic(), left))
            self._first_due = None
        try:
            message = self._context.read(timeout)
        except ExchangeError as error:  # no message in time: the idle rule, or the whole life
            if error.reason is Reason.REQUEST_TIMEOUT and time.monotonic() >= self._ends_at:
                raise _too_long(self._lasts) from None
            raise
        if message is None:
            raise StopIteration
        if len(message) > self._limits.max_message_bytes:
            raise _too_large(self._limits.max_message_bytes)
        self._read += 1
        if self._read > self._limits.max_stream_batches:
            raise _too_long(f"carries at most {self._limits.max_stream_batches} batches")
        return message


def _offloaded(behaviour: Callable[[bytes, ThreadContext], bytes]) -> Callable[..., Steps[bytes]]:
    """A plain unary behaviour as steps that go straight to a worker."""

    def steps(raw: bytes, context: ThreadContext) -> Steps[bytes]:
        yield OFFLOAD
        return behaviour(raw, context)

    return steps


def _pump(handler: Callable[[], Generator[Sent, None, None]], context: ThreadContext) -> bool:
    """Run a response stream on a worker: write each message as the handler yields it.
    A message deferred until its record is durable is sent from the loop while the
    handler makes the next ones; at most SEND_WINDOW are on their way, and all are settled
    (sent, or failed) before a plain message goes, and at a flush. A write that fails
    (the caller left, stopped reading, or the gateway stops), a record that could not be
    made, or a fault sending, is thrown into the handler, which records the end with its
    reason (flushing first, perhaps) and aborts."""
    messages = handler()
    try:
        message = next(messages)
        while True:
            try:
                if isinstance(message, Deferred):
                    context.make_room()
                    context.send_when_recorded(message)
                else:
                    context.settle()
                    if isinstance(message, bytes):
                        context.write(message)
            except Exception as ended:  # an ExchangeError, or a fault sending a message
                message = messages.throw(ended)  # records the end; its abort raises
                continue
            message = next(messages)
    except StopIteration:
        context.settle()  # a stream that closed without a flush: its last message goes
    finally:
        context.drop_sending()
        messages.close()
    return True


async def _durable(pending: Pending) -> None:
    """Wait, on the loop, until the writer has settled `pending` (or the audit timeout
    passes: its `outcome()` then says AUDIT_UNAVAILABLE)."""
    loop = asyncio.get_running_loop()
    settled = loop.create_future()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            loop.call_soon_threadsafe(_settle, settled)

    pending.add_done_callback(wake)
    try:
        async with asyncio.timeout(APPEND_TIMEOUT_S):
            await settled
    except TimeoutError:
        pass


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _outcome(
    job: asyncio.Future[T], context: aio.ServicerContext[Any, Any], on_worker: ThreadContext
) -> T | None:
    """The job's result, or None once its abort has been sent from the loop. The job goes
    on if this call is cancelled (its thread cannot be); it learns it through `gone` when
    it next reads or writes, and records the end with its reason."""
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        on_worker.gone.set()
        # The job ends on its own, its end recorded; no one is left to answer, so its
        # outcome (an abort, usually) is read here rather than logged by asyncio as
        # "never retrieved".
        job.add_done_callback(_settled)
        raise
    except Aborted as aborted:
        if not context.done():
            await context.abort(aborted.code, aborted.details, aborted.trailers)
        return None
    except ExchangeError as unanswered:  # a handler that did not answer its own error
        status = grpc_status(unanswered)
        await context.abort(status.code, status.details, tuple(status.trailing_metadata))
        return None
    except Exception as exc:  # the pipeline answers its own faults: a last resort
        await _fault(context, exc)
        return None


def _settled(job: asyncio.Future[Any]) -> None:
    """Read a finished job's outcome that no caller will."""
    if not job.cancelled():
        job.exception()


async def _fault(context: aio.ServicerContext[Any, Any], exc: Exception) -> None:
    """INTERNAL for a fault the pipeline did not answer, never grpc's UNKNOWN; the log
    names its type and place only (an exception's message may quote request data)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    log.error("gateway fault %s at %s:%s", type(exc).__name__, frame.filename, frame.lineno)
    await context.abort(grpc.StatusCode.INTERNAL, "gateway fault")


def _institution(context: aio.ServicerContext[Any, Any]) -> str:
    """The client certificate's institution ("" in plaintext development mode)."""
    names = context.auth_context().get("x509_common_name")
    return bytes(names[0]).decode() if names else ""


class _Wrapped(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose methods pass through the door."""

    def __init__(self, door: Door, inner: grpc.GenericRpcHandler) -> None:
        self._door = door
        self._inner = inner

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(details)
        if handler is None:
            return None
        door, method = self._door, str(details.method)
        if handler.request_streaming and handler.response_streaming:
            behaviour = handler.stream_stream

            async def streams(requests: object, context: aio.ServicerContext[Any, Any]) -> None:
                await door.stream_stream(method, behaviour, context)

            return grpc.stream_stream_rpc_method_handler(streams)
        if handler.response_streaming:
            produce = handler.unary_stream

            async def pages(requests: object, context: aio.ServicerContext[Any, Any]) -> None:
                await door.unary_stream(method, produce, context)

            return grpc.stream_stream_rpc_method_handler(pages)
        answer = handler.unary_unary

        async def unary(requests: object, context: aio.ServicerContext[Any, Any]) -> bytes | None:
            return await door.unary(method, answer, context)

        return grpc.stream_unary_rpc_method_handler(unary)


def run_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """An event loop on a thread of its own, for a server driven from sync code."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="jisr-loop", daemon=True)
    thread.start()
    return loop, thread
