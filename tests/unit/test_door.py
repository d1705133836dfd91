"""The door's own promises, on a real grpc.aio server in this process (plaintext, so every
call is one institution's): a call that ends while it waits for a worker still ends on
one, with who ended it; its worker share and admission are given back.

The service behind the door is a stand-in that waits on an event where the pipeline would
wait on a network: the door does not own the pipeline (tests/integration hold that)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc import aio

from gateway.base.errors import ExchangeError
from gateway.engine.steps import OFFLOAD, Steps, Unary
from gateway.services.door import Door, Limits, run_loop

METHOD = "/test.Door/Wait"


@dataclass
class Stand:
    """A service whose calls go to a worker and wait there until `release` is set."""

    release: threading.Event = field(default_factory=threading.Event)
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    arrived: int = 0  # calls whose steps began (on the loop)
    on_worker: threading.Event = field(default_factory=threading.Event)

    def steps(self, raw: bytes, context: grpc.ServicerContext) -> Steps[bytes]:
        self.arrived += 1  # the door asks for a worker next, without yielding to the loop
        yield OFFLOAD
        self.on_worker.set()
        self.release.wait(20)
        return raw

    def record(self, method: str, institution: str, error: ExchangeError) -> None:
        self.refused.append((method, institution, error.reason.value))

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "test.Door", {"Wait": grpc.unary_unary_rpc_method_handler(Unary(self.steps))}
        )


@dataclass
class Served:
    door: Door
    stand: Stand
    channel: grpc.Channel
    stop: Callable[[], None]

    def call(self, body: bytes = b"x") -> grpc.Future:
        return self.channel.unary_unary(METHOD).future(body, timeout=20)

    def queue_behind_a_running_call(self) -> tuple[grpc.Future, grpc.Future]:
        """One call on the institution's one worker, and one waiting for it."""
        running = self.call()
        assert self.until(self.stand.on_worker.is_set)
        arrived = self.stand.arrived
        waiting = self.call()
        assert self.until(lambda: self.stand.arrived > arrived)
        return running, waiting

    def cancel_while_waiting(self) -> None:
        """A call that waits for the busy worker, cancelled; returns once it is recorded."""
        arrived, ended = self.stand.arrived, len(self.stand.refused)
        waiting = self.call()
        assert self.until(lambda: self.stand.arrived > arrived)
        waiting.cancel()
        assert self.until(lambda: len(self.stand.refused) > ended)

    def until(self, check: Callable[[], bool], seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.02)
        return False


@pytest.fixture
def served() -> Iterator[Served]:
    stand = Stand()
    door = Door(Limits(workers=2, calls_per_institution=3), stand.record)
    loop, thread = run_loop()

    async def start() -> tuple[aio.Server, int]:
        server = aio.server()
        server.add_generic_rpc_handlers((door.wrap(stand.handler()),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def stop() -> None:
        stand.release.set()
        channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result()
        door.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    yield Served(door, stand, channel, stop)
    stop()


def test_a_call_cancelled_while_waiting_for_a_worker_is_recorded_as_the_callers_cancel(
    served: Served,
) -> None:
    running, waiting = served.queue_behind_a_running_call()  # 2 workers, a share of 1
    waiting.cancel()
    assert served.until(lambda: bool(served.stand.refused))
    assert served.stand.refused == [(METHOD, "", "CALLER_CANCELLED")]
    served.stand.release.set()
    assert running.result() == b"x"


def test_a_call_that_waited_for_a_worker_gives_back_its_place_when_cancelled(
    served: Served,
) -> None:
    running, waiting = served.queue_behind_a_running_call()
    waiting.cancel()
    assert served.until(lambda: len(served.stand.refused) == 1)
    for _ in range(3):  # more cancels than the institution has calls: none is kept
        served.cancel_while_waiting()
    served.stand.release.set()
    assert running.result() == b"x"
    assert [served.call(b"again").result() for _ in range(3)] == [b"again"] * 3


def test_a_call_still_waiting_when_the_drain_grace_ends_is_recorded_gateway_stopping(
    served: Served,
) -> None:
    _, waiting = served.queue_behind_a_running_call()
    served.door.stopping(0)
    waiting.cancel()  # what the server's stop does to its handlers once the grace ends
    assert served.until(lambda: bool(served.stand.refused))
    assert served.stand.refused == [(METHOD, "", "GATEWAY_STOPPING")]
