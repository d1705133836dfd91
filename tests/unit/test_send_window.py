"""A batch stream's answers on their way (gateway/services/door.py, SEND_WINDOW): each
leaves once its audit record is durable, in the order the stream made them, while the
stream's thread goes on deciding the next batches; a failed record ends the stream and
drops the answers made after it. The gRPC servicer context is a fake (the boundary of
grpc.aio, which this code does not own); the event loop, the threads and the records'
settling are real."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from gateway.audit.record import AuditRecord
from gateway.audit.writer import AuditUnavailable, Pending
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


@pytest.fixture
def stream() -> Iterator[tuple[ThreadContext, FakeStreamContext]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeStreamContext()
    ended = ExchangeError(Reason.CALLER_CANCELLED, "ended")
    context = ThreadContext(cast(Any, fake), loop, write_timeout=WAIT_S, ended=lambda: ended)
    yield context, fake
    context.drop_sending()
    asyncio.run_coroutine_threadsafe(_others_ended(), loop).result(WAIT_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT_S)
    loop.close()


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


def test_answers_leave_in_order_even_when_a_later_record_is_durable_first(
    stream: tuple[ThreadContext, FakeStreamContext],
) -> None:
    context, fake = stream
    answers = [answer(bytes([k])) for k in range(SEND_WINDOW)]
    for _, deferred in answers:
        context.send_when_recorded(deferred)
    for pending, _ in reversed(answers):
        pending.succeed(pending.draft)
    context.settle()
    assert fake.written == [bytes([k]) for k in range(SEND_WINDOW)]


def test_the_stream_waits_only_once_a_window_of_answers_waits_for_records(
    stream: tuple[ThreadContext, FakeStreamContext],
) -> None:
    context, fake = stream
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
    assert fake.written == [b"\x00"]


def test_a_failed_record_ends_the_stream_and_drops_the_answers_after_it(
    stream: tuple[ThreadContext, FakeStreamContext],
) -> None:
    context, fake = stream
    answers = [answer(bytes([k])) for k in range(SEND_WINDOW)]
    for _, deferred in answers:
        context.send_when_recorded(deferred)
    answers[0][0].fail(AuditUnavailable("the store is down"))
    for pending, _ in answers[1:]:
        pending.succeed(pending.draft)
    with pytest.raises(ExchangeError) as failed:
        context.settle()
    assert failed.value.reason is Reason.AUDIT_UNAVAILABLE
    assert fake.written == []
    context.settle()  # nothing left on its way: the others were dropped
