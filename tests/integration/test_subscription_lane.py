"""Subscriptions have a lane of their own at the door (docs/events.md, "Delivery"): an
institution following its subscriptions still runs its batch streams, and one holding
too many subscriptions open is refused with RESOURCE_EXHAUSTED, its batch streams
untouched."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from adapters.demo_data import generate
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.events import Events
from tests.support import processes, registry_rows
from tests.support.event_site import ASD, start

pytestmark = pytest.mark.integration

LIMITS = {
    "JISR_MAX_STREAMS_PER_INSTITUTION": "1",
    "JISR_MAX_SUBSCRIPTIONS_PER_INSTITUTION": "2",
    "JISR_EVENTS_MAX_STREAM_SECONDS": "30",
}


@pytest.fixture(scope="module")
def gateway(
    pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[processes.Proc, Path]]:
    folder = tmp_path_factory.mktemp("lane")
    data_dir = folder / "data"
    generate(data_dir, 200, 4)
    (proc,) = start(folder, data_dir, pki_dir, None, 1, more_env=LIMITS)
    yield proc, data_dir
    assert proc.stop() == 0


HOLD_S = 15.0  # how long each follower holds its stream open (its own deadline)


def _follow(events: Events, sid: str, opened: threading.Event) -> None:
    """Hold a followed Subscribe stream open until its deadline, as a subscriber would."""
    stream = events.subscribe(sid, follow=True, timeout=HOLD_S)
    opened.set()
    try:
        for _ in stream:
            pass
    except JisrError as exc:
        if exc.code != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise


def test_subscriptions_do_not_take_the_place_of_a_batch_stream(
    gateway: tuple[processes.Proc, Path], pki_dir: Path
) -> None:
    proc, data_dir = gateway
    with ExitStack() as stack:
        creds = Credentials.from_pki(pki_dir, "DEMO")
        client = stack.enter_context(JisrClient(proc.target, creds, timeout=30))
        events = Events(client, ASD)
        followers = []
        for _ in range(2):
            sid = events.create(["person.died"]).message.subscription.subscription_id
            opened = threading.Event()
            follower = threading.Thread(target=_follow, args=(events, sid, opened))
            follower.start()
            followers.append(follower)
            assert opened.wait(30)
        time.sleep(1.0)  # both streams admitted and running on the gateway
        try:
            households = registry_rows.subjects(data_dir).household_ids[:5]
            (results,) = list(client.verify_batches(ASD, "ASD", [households]))
            assert len(results.results) == 5
            third = events.create(["person.died"]).message.subscription.subscription_id
            with pytest.raises(JisrError) as caught:
                list(events.subscribe(third))
            assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.reason == "TOO_MANY_CALLS"
            assert "subscriptions" in caught.value.message
        finally:
            for follower in followers:
                follower.join(HOLD_S + 10)
