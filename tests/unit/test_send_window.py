"""A batch stream's answers on their way (gateway/services/door.py, SEND_WINDOW): each
leaves once its audit record is durable, in the order the stream made them, while the
stream's thread goes on deciding the next batches; a failed record ends the stream and
drops the answers made after it. The gRPC servicer context is a fake (the boundary of
grpc.aio, which this code does not own); the event loop, the threads and the records'
settling are real."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from gateway.audit.record import AuditRecord
from gateway.audit.writer import APPEND_TIMEOUT_S, AuditUnavailable, Pending
from gateway.base.errors import ExchangeError, Reason
from gateway.engine.call import recorded
from gateway.engine.steps import Deferred
from gateway.services.door import SEND_WINDOW, ThreadContext

# A batch's record as the writer would make durable (its content is not under test).
RECORD = AuditRecord(
    "gw-a:0", 1, 1_800_000_000_000_001, "", "CNSS", "officer-7", "/m", "P", "b",
    ("s1",), (), "permit", "", "rh", "sh", "j", 1, 1, "", ""
)  # fmt: skip
WAIT_S = 10.0  # ample on a busy machine: every wait below ends as soon as it can


class Stream:
    """A stream's ThreadContext over a real event loop on a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeStreamContext()
        ended = ExchangeError(Reason.CALLER_CANCELLED, "ended")
        self.context = ThreadContext(
            cast(Any, self.fake), self.loop, write_timeout=WAIT_S, ended=lambda: ended
        )

    def written_once_quiet(self) -> list[bytes]:
        """What was written once every answer's coroutine has ended."""
        asyncio.run_coroutine_threadsafe(_others_ended(), self.loop).result(WAIT_S)
        return self.fake.written

    def close(self) -> None:
        self.context.drop_sending()
        asyncio.run_coroutine_threadsafe(_others_ended(), self.loop).result(WAIT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()


class FakeStreamContext:
    """What ThreadContext asks of grpc.aio's servicer context: the messages written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def time_remaining(self) -> None:
        return None

    def done(self) -> bool:
        return False

    async def write(self, message: bytes) -> None:
        self.written.append(message)

    async def read(self) -> bytes:
        """The caller sends nothing more until it hears back."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
def stream() -> Iterator[Stream]:
    opened = Stream()
    yield opened
    opened.close()


async def _others_ended() -> None:
    """Let the answers dropped by the test end before the loop stops."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    await asyncio.gather(*others, return_exceptions=True)


def answer(body: bytes) -> tuple[Pending, Deferred]:
    """An answer waiting for its record: sent as `body` once the record is durable."""
    pending = Pending(RECORD)

    def finish() -> bytes:
        recorded(pending)  # raises the refusal of a failed record
        return body

    return pending, Deferred(pending, finish)


def awaited(answers: list[tuple[Pending, Deferred]]) -> None:
    """Return once every answer's coroutine waits for its record on the loop: settling a
    record before would let the loop find them all settled and test no ordering."""
    deadline = time.monotonic() + WAIT_S
    while not all(pending.callbacks for pending, _ in answers):
        assert time.monotonic() < deadline, "the loop never took the answers"
        time.sleep(0.001)


def in_flight(context: ThreadContext) -> list[tuple[Pending, Deferred]]:
    """SEND_WINDOW answers handed to the loop, each waiting there for its record."""
    answers = [answer(bytes([k])) for k in range(SEND_WINDOW)]
    for _, deferred in answers:
        context.send_when_recorded(deferred)
    awaited(answers)
    return answers


def test_answers_leave_in_order_even_when_a_later_record_is_durable_first(
    stream: Stream,
) -> None:
    answers = in_flight(stream.context)
    for pending, _ in reversed(answers):
        pending.succeed(pending.draft)
        time.sleep(0.01)  # a later answer, were it not chained, would be written first
    stream.context.settle()
    assert stream.written_once_quiet() == [bytes([k]) for k in range(SEND_WINDOW)]


def test_the_stream_waits_only_once_a_window_of_answers_waits_for_records(
    stream: Stream,
) -> None:
    context = stream.context
    answers = [answer(bytes([k])) for k in range(SEND_WINDOW)]
    for _, deferred in answers[:-1]:
        context.make_room()  # returns at once: fewer than SEND_WINDOW wait
        context.send_when_recorded(deferred)
    context.make_room()
    context.send_when_recorded(answers[-1][1])
    made_room = threading.Event()

    def make_room() -> None:
        context.make_room()
        made_room.set()

    waiting = threading.Thread(target=make_room)
    waiting.start()
    assert not made_room.wait(0.2)  # the window is full: the oldest must go first
    answers[0][0].succeed(answers[0][0].draft)
    assert made_room.wait(WAIT_S)
    waiting.join(WAIT_S)
    for pending, _ in answers[1:]:
        pending.succeed(pending.draft)
    context.settle()
    assert stream.written_once_quiet() == [bytes([k]) for k in range(SEND_WINDOW)]


def test_a_failed_record_ends_the_stream_and_drops_the_answers_after_it(
    stream: Stream,
) -> None:
    context = stream.context
    answers = in_flight(context)
    answers[0][0].fail(AuditUnavailable("the store is down"))
    for pending, _ in answers[1:]:
        pending.succeed(pending.draft)
    with pytest.raises(ExchangeError) as failed:
        context.settle()
    assert failed.value.reason is Reason.AUDIT_UNAVAILABLE
    assert stream.written_once_quiet() == []
    context.settle()  # nothing left on its way: the others were dropped


def test_a_read_waiting_for_the_next_batch_ends_when_an_older_answer_fails(
    stream: Stream,
) -> None:
    context = stream.context
    answers = in_flight(context)
    answers[0][0].fail(AuditUnavailable("the store is down"))  # the newer ones still wait
    with pytest.raises(ExchangeError) as failed:  # before the newer ones' records time out
        context.read(APPEND_TIMEOUT_S / 2)
    assert failed.value.reason is Reason.AUDIT_UNAVAILABLE
