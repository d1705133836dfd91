"""Notification streams through the call engine, in-process: each batch projected to the
Subscribe grant, recorded as its own part naming the subjects it carries, and signed for
its place; a subscription refused before anything is sent; a subscriber that leaves while
the stream waits for events (gateway/engine/notify.py, docs/events.md).

The engine's world is test_engine.py's (real PKI, policy, trust, receipt key, SQLite
audit). The feed is a stand-in for the event log (the service and its store have their own
tests), so a test can make it fail or wait on purpose."""

from __future__ import annotations

from collections.abc import Iterator

from adapters.base import FetchContext
from gateway.base.errors import ExchangeError, Reason
from gateway.base.identifiers import make_idcs
from gateway.engine.call import Answered, Invocation, Outcome, Refused
from gateway.engine.notify import Gone, NotifyMethod, notification_stream
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pipeline.query import Key
from gateway.security.policy import Grant
from tests.unit import test_engine
from tests.unit.test_engine import World

# The engine's world, shared with test_engine.py.
pki_dir = test_engine.pki_dir
world = test_engine.world

SUBSCRIBE = f"/{epb.DESCRIPTOR.services_by_name['RegistryEvents'].full_name}/Subscribe"
HOUSEHOLD = "H000000007"
PERSON = make_idcs("100000007")
REQUEST = epb.SubscribeRequest(purpose="AMO_ENROLMENT", subscription_id="sub-1")
Batches = Iterator[tuple[epb.NotificationBatch, list[Key]]]


def _rescored(cursor: int) -> epb.Notification:
    return epb.Notification(
        cursor=cursor,
        event=epb.ChangeEvent(
            event_id=f"RSU-{cursor}",
            source="RSU",
            type=epb.EVENT_TYPE_HOUSEHOLD_RESCORED,
            household_id=HOUSEHOLD,
            idcs=PERSON,
            score_band="S6",
            previous_score_band="S5",
        ),
    )


def _feed(batches: int) -> NotifyMethod:
    def open_(
        request: epb.SubscribeRequest, ctx: FetchContext, grant: Grant, gone: Gone
    ) -> Batches:
        for i in range(batches):
            batch = epb.NotificationBatch(
                subscription_id=request.subscription_id,
                after=i,
                cursor=i + 1,
                head=batches,
                notifications=[_rescored(i + 1)],
            )
            yield batch, [("household_id", HOUSEHOLD)]

    return NotifyMethod(open_)


def _run(world: World, method: NotifyMethod, *, active: bool = True) -> tuple[list[bytes], Outcome]:
    raw = REQUEST.SerializeToString()
    token = world.creds("CNSS").signer.request_token(SUBSCRIBE, "AMO_ENROLMENT", raw)
    inv = Invocation(SUBSCRIBE, "CNSS", (token,), remaining=lambda: 10.0, active=lambda: active)
    stream = notification_stream(world.engine, inv, raw, method)
    bodies: list[bytes] = []
    while True:
        try:
            bodies.append(next(stream))
        except StopIteration as end:
            return bodies, end.value


def test_each_batch_keeps_only_the_fields_of_the_subscribe_grant(world: World) -> None:
    bodies, _ = _run(world, _feed(2))
    batches = [
        epb.NotificationBatch.FromString(epb.SubscribeResponse.FromString(b).batch) for b in bodies
    ]
    events = [n.event for batch in batches for n in batch.notifications]
    assert [(e.event_id, e.household_id, e.score_band) for e in events] == [
        ("RSU-1", HOUSEHOLD, ""),
        ("RSU-2", HOUSEHOLD, ""),
    ]
    assert "score_band" in batches[0].withheld.paths


def test_each_batch_is_recorded_as_its_own_part_naming_its_subjects(world: World) -> None:
    _, outcome = _run(world, _feed(2))
    assert isinstance(outcome, Answered)
    records = world.records()
    assert [(r.part, r.decision) for r in records] == [(1, "permit"), (2, "permit"), (0, "permit")]
    hashes = world.engine.security.audit.subjects(  # type: ignore[union-attr]
        [("idcs", PERSON), ("household_id", HOUSEHOLD)]
    )
    assert [tuple(r.subjects) for r in records[:2]] == [hashes, hashes]
    assert records[2].subjects == ()


def test_each_batch_receipt_names_its_place_and_its_record(world: World) -> None:
    bodies, outcome = _run(world, _feed(3))
    claims = [world.receipt(epb.SubscribeResponse.FromString(b).receipt) for b in bodies]
    assert [c["seq"] for c in claims] == [0, 1, 2]
    assert [c["audit"] for c in claims] == [r.record_id for r in world.records()[:3]]
    assert isinstance(outcome, Answered)
    assert world.receipt(outcome.receipt)["batches"] == 3


def test_a_subscription_refused_at_opening_sends_nothing_and_is_recorded(world: World) -> None:
    def refuse(
        request: epb.SubscribeRequest, ctx: FetchContext, grant: Grant, gone: Gone
    ) -> Batches:
        raise ExchangeError(Reason.SUBSCRIPTION_NOT_FOUND, "no subscription of yours has this id")

    bodies, outcome = _run(world, NotifyMethod(refuse))
    assert bodies == []
    assert isinstance(outcome, Refused)
    assert outcome.error.reason == Reason.SUBSCRIPTION_NOT_FOUND
    assert [(r.decision, r.reason) for r in world.records()] == [("deny", "SUBSCRIPTION_NOT_FOUND")]


def test_a_subscriber_gone_while_the_stream_waits_is_recorded_as_its_end(world: World) -> None:
    def waiting(
        request: epb.SubscribeRequest, ctx: FetchContext, grant: Grant, gone: Gone
    ) -> Batches:
        ended = gone()
        if ended is not None:
            raise ended
        yield from ()

    _, outcome = _run(world, NotifyMethod(waiting), active=False)
    assert isinstance(outcome, Refused)
    assert outcome.error.reason == Reason.CALLER_CANCELLED
    assert [r.reason for r in world.records()] == ["CALLER_CANCELLED"]
