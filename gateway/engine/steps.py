"""A call's work as steps: a generator that yields where it would wait, so that an
event loop can drive it without holding a thread, and a plain thread can too.

The exchange pipeline is synchronous code. Two of its waits are worth not blocking on: the
audit record becoming durable (group commit, milliseconds), and anything that may wait on
the network (a remote registry, a networked consent or audit store). The first is yielded
as the writer's `Pending`; before the second, the steps yield `OFFLOAD`, and the driver
moves them to a worker thread (gateway/services/door.py, the gRPC edge). `drive` runs
steps on the calling thread, blocking where they wait: the sync server API, benchmarks,
and the rest of an offloaded call.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.audit.writer import APPEND_TIMEOUT_S, Pending


class Offload:
    """Yielded by a call's steps: what follows may block for long (a networked store, a
    remote registry), so the driver must run it on a worker thread, not the event loop."""


OFFLOAD = Offload()


@dataclass(frozen=True)
class Deferred:
    """A response stream's message that waits on its audit record: the driver sends it
    once `pending` has settled, calling `finish` then for its bytes (which raises the
    refusal if the record failed). Meanwhile the stream goes on to its next messages, so
    the stream's thread decides the batches after k while batch k's record is committed."""

    pending: Pending
    finish: Callable[[], bytes]


class Flush:
    """Yielded by a response stream before it closes: the driver settles every message
    still on its way first, and throws in the error of one that failed, so that a stream
    never closes its books over an answer its caller did not get."""


FLUSH = Flush()
# What a response stream yields: a message to send now, one to send once its record is
# durable, or a flush.
Sent = bytes | Deferred | Flush
Step = Pending | Offload
T = TypeVar("T")
# A call's work as a generator: it yields where it would wait (an audit record to become
# durable, or OFFLOAD), and returns its result. `drive` runs it on this thread; the door
# (gateway/services/door.py) runs it on the event loop, waiting without a thread.
Steps = Generator[Step, None, T]


def drive(steps: Steps[T]) -> T:
    """Run steps to their end on this thread, blocking where they wait."""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Pending):
                step.wait(APPEND_TIMEOUT_S)
            step = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result


def thrown(steps: Steps[T], error: BaseException) -> Steps[T]:
    """The rest of suspended `steps` once `error` is raised where they wait: how a driver
    tells a call it must end (its caller left, the gateway stops) and lets it record why."""
    try:
        step = steps.throw(error)
        while True:
            yield step
            step = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result


class Unary:
    """A unary method's behaviour: called, it runs its steps on this thread (the sync
    server API); `steps` is there for a driver that can wait without one."""

    def __init__(self, steps: Callable[[bytes, Any], Steps[bytes]]) -> None:
        self.steps = steps

    def __call__(self, raw: bytes, context: Any) -> bytes:
        return drive(self.steps(raw, context))
