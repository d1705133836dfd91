"""Registry change events end to end, with real processes: `jisr registry apply` changes a
registry, the gateway reads its journal into the event log (SQLite, or PostgreSQL shared
by two replicas), and subscribers create subscriptions, read signed batches, resume from
their acknowledged cursor and reconcile with a digest (docs/events.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.base.wire import REGISTRY_EVENTS, method_path
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pb.jisr.v1 import registry_pb2
from gateway.sdk.events import Events, local_digest
from tests.support.event_site import (
    AMO,
    ASD,
    WAIT_S,
    Site,
    at_least,
    error,
    read,
    started_site,
    until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    with started_site(request.param, 1, pki_dir, tmp_path_factory.mktemp("events")) as started:
        yield started


@pytest.fixture(scope="module")
def replicas(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Two gateways sharing one PostgreSQL, as replicas do (SQLite state is one gateway's)."""
    with started_site("postgresql", 2, pki_dir, tmp_path_factory.mktemp("replicas")) as started:
        yield started


def test_a_programme_learns_of_a_death_in_civil_status(site: Site) -> None:
    events = Events(site.client("ANSS"), ASD)
    sid = events.create(["person.died"]).message.subscription.subscription_id
    household, person, line = site.death()
    site.apply(line)
    got = until(lambda: read(events, sid))
    assert [(n.event.type, n.event.idcs, n.event.household_id) for n in got] == [
        (epb.EVENT_TYPE_PERSON_DIED, person, household)
    ]
    assert got[0].event.event_id == line["id"]
    assert (got[0].event.effective.year, got[0].event.effective.month) == (2026, 11)


def test_each_batch_is_signed_for_its_place_in_the_stream(site: Site) -> None:
    events = Events(site.client("DEMO"), ASD)
    sid = events.create(["household.rescored"]).message.subscription.subscription_id
    site.apply(site.rescoring()[1])
    until(lambda: read(events, sid))
    stream = events.subscribe(sid)
    answers = list(stream)
    assert [a.receipt["seq"] for a in answers] == list(range(len(answers)))
    assert all(a.receipt["method"] == method_path(REGISTRY_EVENTS, "Subscribe") for a in answers)
    assert all(a.receipt["audit"] for a in answers)
    assert stream.closing is not None
    assert stream.closing.claims["batches"] == len(answers)


def test_a_rescoring_reaches_anss_as_bands_and_cnss_without_them(site: Site) -> None:
    anss, cnss = Events(site.client("ANSS"), ASD), Events(site.client("CNSS"), AMO)
    a = anss.create(["household.rescored"]).message.subscription.subscription_id
    c = cnss.create(["household.rescored"]).message.subscription.subscription_id
    household, line = site.rescoring(10.2)
    site.apply(line)
    seen_by_anss = until(lambda: read(anss, a))
    seen_by_cnss = until(lambda: read(cnss, c))
    assert seen_by_anss[0].event.household_id == household
    assert seen_by_anss[0].event.score_band == "S6"
    assert seen_by_anss[0].event.previous_score_band
    assert seen_by_cnss[0].event.household_id == household
    assert (seen_by_cnss[0].event.score_band, seen_by_cnss[0].event.previous_score_band) == (
        "",
        "",
    )


def test_a_rescoring_across_the_asd_threshold_tells_anss_the_old_and_new_decision(
    site: Site,
) -> None:
    anss = Events(site.client("ANSS"), ASD)
    household = next(h for h in site.households if h.score < 9.3 and not h.schemes)
    sid = anss.create(["eligibility.changed"], [household.household_id]).message.subscription
    line: dict[str, object] = {
        "id": f"RSU-T-{next(site.serial)}",
        "source": "RSU",
        "type": "household.rescored",
        "effective": "2026-11-04",
        "household_id": household.household_id,
        "score": 12.0,
    }
    site.apply(line)
    # Carried out once the (test's one-second) notice of the proposed action is over.
    seen = at_least(anss, sid.subscription_id, 2)
    got = {n.event.programme: n.event for n in seen}
    assert "ASD" in got, [(n.event.programme, n.event.event_id, n.event.type) for n in seen]
    asd = got["ASD"]
    assert asd.action_id == f"{line['id']}/action/ASD"
    assert (asd.household_id, asd.source, asd.cause) == (
        household.household_id,
        "JISR-DUE",
        line["id"],
    )
    assert (asd.previous_eligible, asd.eligible) == (True, False)
    assert list(asd.previous_reasons) == [registry_pb2.REASON_CODE_SCORE_BELOW_THRESHOLD]
    assert list(asd.reasons) == [registry_pb2.REASON_CODE_SCORE_ABOVE_THRESHOLD]
    assert asd.threshold_version == "ASD-2023"
    assert (got["AMOT"].previous_eligible, got["AMOT"].eligible) == (True, False)


def test_changes_applied_together_are_judged_in_the_order_they_were_made(site: Site) -> None:
    events = Events(site.client("DEMO"), AMO)
    household = next(h for h in site.households if h.score < 9.3 and not h.schemes)
    subjects = [household.household_id]
    sid = events.create(["eligibility.changed"], subjects).message.subscription.subscription_id
    person = next(m for m in household.members if site.alive(m))
    rescored: dict[str, object] = {
        "id": f"RSU-T-{next(site.serial)}",
        "source": "RSU",
        "type": "household.rescored",
        "effective": "2026-11-04",
        "household_id": household.household_id,
        "score": 12.0,
    }
    covered: dict[str, object] = {
        "id": f"CNSS-T-{next(site.serial)}",
        "source": "CNSS",
        "type": "coverage.started",
        "effective": "2026-11-05",
        "idcs": person,
        "scheme": "AMO_SALARIES",
    }
    site.apply(rescored, covered)
    got = at_least(events, sid, 2)
    turned = sorted((n.event.programme, n.event.cause, n.event.eligible) for n in got)
    # The rescoring ended both; the coverage, coming after it, turned nothing more.
    assert turned == [("AMOT", rescored["id"], False), ("ASD", rescored["id"], False)]


def test_a_subscriber_resumes_after_its_acknowledged_cursor(site: Site) -> None:
    events = Events(site.client("DEMO"), ASD)
    sid = events.create(["person.died"]).message.subscription.subscription_id
    first = site.death()
    site.apply(first[2])
    got = until(lambda: read(events, sid))
    assert events.acknowledge(sid, got[-1].cursor).message.acknowledged == got[-1].cursor
    second = site.death()
    site.apply(second[2])
    resumed = until(lambda: read(events, sid))
    assert [n.event.idcs for n in resumed] == [second[1]]


def test_an_acknowledged_cursor_never_moves_back(site: Site) -> None:
    events = Events(site.client("DEMO"), ASD)
    sid = events.create(["person.died"]).message.subscription.subscription_id
    site.apply(site.death()[2])
    got = until(lambda: read(events, sid))
    events.acknowledge(sid, got[-1].cursor)
    assert events.acknowledge(sid, 0).message.acknowledged == got[-1].cursor


def test_a_subscription_restricted_to_a_household_hears_only_of_it(site: Site) -> None:
    events = Events(site.client("ANSS"), ASD)
    mine, person, mine_line = site.death()
    _, _, other_line = site.death()
    sid = events.create(["person.died"], [mine]).message.subscription.subscription_id
    site.apply(other_line, mine_line)
    got = until(lambda: read(events, sid))
    assert [(n.event.household_id, n.event.idcs) for n in got] == [(mine, person)]


def test_a_followed_stream_delivers_an_event_applied_while_it_is_open(site: Site) -> None:
    events = Events(site.client("DEMO"), ASD)
    sid = events.create(["household.rescored"]).message.subscription.subscription_id
    household, line = site.rescoring()
    received: list[epb.Notification] = []

    def follow() -> None:
        for answer in events.subscribe(sid, follow=True, timeout=WAIT_S):
            received.extend(answer.message.notifications)
            if received:
                return

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.5)
    site.apply(line)
    reader.join(WAIT_S + 10)
    assert [n.event.household_id for n in received] == [household]


def test_the_digest_proves_a_subscriber_missed_nothing(site: Site) -> None:
    events = Events(site.client("DEMO"), ASD)
    created = events.create(["person.died", "household.rescored"]).message.subscription
    start = created.start_cursor
    site.apply(site.death()[2], site.rescoring()[1], site.death()[2])
    got = at_least(events, created.subscription_id, 3)
    through = got[-1].cursor
    mine, per_source = local_digest(n.event for n in got)
    theirs = events.digest(created.subscription_id, start, through).message
    assert (theirs.count, theirs.sha256) == (mine.count, mine.sha256) == (3, theirs.sha256)
    assert {(s.source, s.count, s.sha256) for s in theirs.sources} == {
        (source, d.count, d.sha256) for source, d in per_source.items()
    }


def test_a_catch_up_with_nothing_new_still_says_where_the_head_is(site: Site) -> None:
    events = Events(site.client("DEMO"), ASD)
    sid = events.create(["person.born"]).message.subscription.subscription_id
    stream = events.subscribe(sid)
    (only,) = [answer.message for answer in stream]
    assert (len(only.notifications), only.after, only.cursor) == (0, only.cursor, only.head)
    assert stream.cursor == only.head


def test_an_event_delivered_twice_counts_once_in_the_local_digest() -> None:
    event = epb.ChangeEvent(event_id="RNP-1", source="RNP")
    twice, _ = local_digest([event, event])
    once, _ = local_digest([event])
    assert (twice.count, twice.sha256) == (once.count, once.sha256) == (1, once.sha256)


def test_a_cursor_beyond_the_head_is_out_of_range_with_the_oldest_cursor(site: Site) -> None:
    events = Events(site.client("DEMO"), ASD)
    sid = events.create(["person.died"]).message.subscription.subscription_id
    refused = error(lambda: read(events, sid, after=10**12))
    assert (refused.code, refused.reason) == (grpc.StatusCode.OUT_OF_RANGE, "CURSOR_OUT_OF_RANGE")
    assert refused.metadata["oldest_cursor"] == "0"


def test_a_purpose_without_a_subscribe_grant_is_denied(site: Site) -> None:
    events = Events(site.client("MEN"), "SCHOOL_SUPPORT")
    refused = error(lambda: events.create(["person.died"]))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PURPOSE_NOT_ALLOWED",
    )


def test_a_type_the_grant_does_not_allow_is_denied(site: Site) -> None:
    events = Events(site.client("CNSS"), AMO)
    refused = error(lambda: events.create(["household.region_changed"]))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "EVENT_TYPE_NOT_ALLOWED",
    )


def test_another_institutions_subscription_is_not_found(site: Site) -> None:
    sid = Events(site.client("DEMO"), ASD).create(["person.died"]).message.subscription
    refused = error(lambda: read(Events(site.client("ANSS"), ASD), sid.subscription_id))
    assert (refused.code, refused.reason) == (grpc.StatusCode.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND")


def test_a_cancelled_subscription_delivers_nothing_more(site: Site) -> None:
    events = Events(site.client("DEMO"), ASD)
    sid = events.create(["person.died"]).message.subscription.subscription_id
    assert events.cancel(sid).message.subscription.HasField("cancelled")
    refused = error(lambda: read(events, sid))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SUBSCRIPTION_CANCELLED",
    )


def test_replicas_on_one_database_log_each_event_once(replicas: Site) -> None:
    site = replicas
    first = Events(site.client("DEMO", 0), ASD)
    sid = first.create(["person.died"]).message.subscription.subscription_id
    lines = [site.death()[2] for _ in range(5)]
    site.apply(*lines)
    second = Events(site.client("DEMO", 1), ASD)
    got = at_least(second, sid, 5)
    ids = [n.event.event_id for n in got]
    assert sorted(ids) == sorted(str(line["id"]) for line in lines)
    assert [n.cursor for n in got] == sorted({n.cursor for n in got})
