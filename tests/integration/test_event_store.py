"""The event stores: one suite, run against SQLite and against PostgreSQL.

What the ingester, the subscription service and replicas sharing one log rely on must hold
on both backends: positions are consecutive and given once per event whoever offers it, a
gap in a source refuses the whole call, a page reads what its subscription asks for with
the cursor rule, pruning raises the floor without losing the heads, and cursors never move
back. PostgreSQL tests get a fresh schema each (tests/support/databases.py says when they
run).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.events.migrations import MIGRATIONS_TABLE, POSTGRES, SQLITE
from gateway.events.model import (
    HOUSEHOLD,
    PERSON,
    NewEvent,
    NumberTakenError,
    StoredEvent,
    Subscription,
)
from gateway.events.store import FILE_NAME, EventStore, open_event_store
from gateway.storage.migrations import SchemaTooNewError
from tests.support import databases
from tests.support.threads import run_together

T0 = 1_750_000_000_000_000
SECOND = 1_000_000
DIED = "person.died"
RESCORED = "household.rescored"
JOINED = "member.joined"
COVERED = "coverage.started"
IDCS = "1234567897"
OTHER_IDCS = "2345678901"
HOUSEHOLD_ID = "H042117093"
OTHER_HOUSEHOLD = "H000000001"


EventDatabase = databases.StoreDatabase[EventStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventDatabase]:
    with databases.store_database(request.param, tmp_path, open_event_store, FILE_NAME) as made:
        yield made


@pytest.fixture
def store(db: EventDatabase) -> EventStore:
    return db.open()


def event(
    seq: int,
    source: str = "RNP",
    *,
    type_: str = DIED,
    idcs: str = IDCS,
    household_id: str = "",
) -> NewEvent:
    return NewEvent(
        source=source,
        source_seq=seq,
        event_id=f"{source}-2026-11-{seq:06d}",
        type=type_,
        idcs=idcs,
        household_id=household_id,
        recorded_us=T0 - SECOND + seq,
        payload=b"\x00\x01change\xff" + seq.to_bytes(4, "big"),
        detail='{"before": {"vital_status": "ALIVE"}}',
    )


def events(first: int, last: int, source: str = "RNP", **kwargs: Any) -> list[NewEvent]:
    return [event(seq, source, **kwargs) for seq in range(first, last + 1)]


def subscription(
    subscription_id: str = "sub-0123456789abcdef",
    *,
    types: tuple[str, ...] = (DIED, RESCORED),
    subjects: int = 0,
    acknowledged: int = 0,
) -> Subscription:
    return Subscription(
        subscription_id=subscription_id,
        institution="CNSS",
        purpose="benefit-eligibility",
        types=types,
        subjects=subjects,
        start_cursor=acknowledged,
        acknowledged=acknowledged,
        created_us=T0,
    )


def read_all(
    store: EventStore,
    types: Sequence[str],
    subscription_id: str | None = None,
    limit: int = 500,
    after: int = 0,
) -> list[StoredEvent]:
    """Every matching event after `after`, page by page up to the head."""
    head = store.bounds().head
    out: list[StoredEvent] = []
    while after < head:
        page = store.page(
            after, through=head, types=types, subscription_id=subscription_id, limit=limit
        )
        assert page.cursor > after
        out += page.events
        after = page.cursor
    return out


# Appending.


def test_append_assigns_consecutive_positions_in_the_order_given(store: EventStore) -> None:
    given = [event(1), event(1, "RSU", type_=RESCORED, idcs="", household_id=HOUSEHOLD_ID)]
    given += [event(2), event(2, "RSU"), event(3)]
    assert store.append(given, T0) == 5
    stored = read_all(store, [DIED, RESCORED])
    assert [e.position for e in stored] == [1, 2, 3, 4, 5]
    assert [(e.source, e.source_seq) for e in stored] == [(e.source, e.source_seq) for e in given]
    assert store.bounds().head == 5


def test_an_appended_event_reads_back_by_id_as_given(store: EventStore) -> None:
    given = event(1, "RSU", type_=RESCORED, idcs="", household_id=HOUSEHOLD_ID)
    store.append([given], T0)
    assert store.event(given.event_id) == StoredEvent(
        position=1,
        source="RSU",
        source_seq=1,
        event_id=given.event_id,
        type=RESCORED,
        idcs="",
        household_id=HOUSEHOLD_ID,
        recorded_us=given.recorded_us,
        ingested_us=T0,
        payload=given.payload,
        detail=given.detail,
    )
    assert store.event("RSU-2026-11-999999") is None


def test_appending_the_same_events_again_adds_none(store: EventStore) -> None:
    store.append(events(1, 5), T0)
    assert store.append(events(1, 5), T0 + SECOND) == 0
    assert store.bounds().head == 5
    assert len(read_all(store, [DIED])) == 5


def test_events_already_in_the_log_are_skipped_and_the_rest_follow(store: EventStore) -> None:
    store.append(events(1, 5), T0)
    assert store.append(events(3, 8), T0 + SECOND) == 3
    stored = read_all(store, [DIED])
    assert [(e.position, e.source_seq) for e in stored] == [(n, n) for n in range(1, 9)]
    assert [e.ingested_us for e in stored[4:6]] == [T0, T0 + SECOND]


def test_a_gap_in_a_source_raises_and_writes_nothing(store: EventStore) -> None:
    store.append(events(1, 2), T0)
    with pytest.raises(ValueError, match="RNP: sequence 6 does not follow the log's head 4"):
        store.append([*events(3, 4), event(1, "CNSS"), event(6)], T0 + SECOND)
    assert store.bounds().head == 2
    assert store.heads() == {"RNP": 2}
    assert store.event(event(1, "CNSS").event_id) is None


def test_a_source_must_start_at_sequence_one(store: EventStore) -> None:
    with pytest.raises(ValueError, match=r"RSU: sequence 2 .*head 0"):
        store.append([event(2, "RSU")], T0)
    assert store.heads() == {}


def test_append_refusals_name_no_subject(store: EventStore) -> None:
    store.append([event(1, household_id=HOUSEHOLD_ID)], T0)
    refused = [
        [event(3, household_id=HOUSEHOLD_ID)],
        [replace(event(2), event_id=event(1).event_id)],
    ]
    for call in refused:
        with pytest.raises(ValueError, match="nothing was appended") as raised:
            store.append(call, T0)
        assert IDCS not in str(raised.value)
        assert HOUSEHOLD_ID not in str(raised.value)


def test_an_event_id_reused_under_another_sequence_raises_and_writes_nothing(
    store: EventStore,
) -> None:
    store.append(events(1, 2), T0)
    reused = replace(event(1, "RSU"), event_id=event(2).event_id)
    with pytest.raises(ValueError, match=r"event id .* RSU 1\.\.1"):
        store.append([event(3), reused], T0 + SECOND)
    assert store.bounds().head == 2
    assert store.heads() == {"RNP": 2}


def test_heads_are_the_highest_sequence_per_source(store: EventStore) -> None:
    assert store.heads() == {}
    store.append([*events(1, 3), *events(1, 2, "CNSS")], T0)
    assert store.heads() == {"RNP": 3, "CNSS": 2}


def test_two_replicas_appending_the_same_events_at_once_store_each_once_in_order(
    db: EventDatabase,
) -> None:
    replicas, reader = [db.open(), db.open()], db.open()
    per_source, total = 600, 1200
    offered = {s: events(1, per_source, s, idcs=OTHER_IDCS) for s in ("RNP", "RSU")}
    seen: list[int] = []
    stop = threading.Event()

    def ingest(i: int) -> int:
        """Replica i offers both sources, interleaved as an ingester's rounds would, in
        batches of a size of its own (so that the two replicas' calls overlap unevenly)."""
        size, added = 40 + 30 * i, 0
        for start in range(0, per_source, size):
            for source in ("RNP", "RSU"):
                batch = offered[source][start : start + size]
                added += replicas[i].append(batch, T0 + start)
        return added

    def read_meanwhile() -> None:
        """A subscriber polling up to the head while they append: it must never skip."""
        after = 0
        while True:
            finished = stop.is_set()  # then one last pass reads what remains
            head = reader.bounds().head
            while after < head:
                page = reader.page(
                    after, through=head, types=[DIED], subscription_id=None, limit=50
                )
                seen.extend(e.position for e in page.events)
                after = page.cursor
            if finished:
                return

    polling = threading.Thread(target=read_meanwhile)
    polling.start()
    try:
        results = run_together(2, ingest)
    finally:
        stop.set()
        polling.join()
    assert [r for r in results if not isinstance(r, int)] == []
    assert sum(r for r in results if isinstance(r, int)) == total
    stored = read_all(reader, [DIED])
    assert [e.position for e in stored] == list(range(1, total + 1))
    for source in ("RNP", "RSU"):
        in_order = [e.source_seq for e in stored if e.source == source]
        assert in_order == list(range(1, per_source + 1))
    assert seen == list(range(1, total + 1))
    assert reader.heads() == {"RNP": per_source, "RSU": per_source}


# Reading pages.


def test_a_page_holds_only_the_types_asked(store: EventStore) -> None:
    store.append(
        [
            event(1),
            event(1, "RSU", type_=RESCORED, idcs="", household_id=HOUSEHOLD_ID),
            event(1, "CNSS", type_=COVERED),
            event(2),
        ],
        T0,
    )
    page = store.page(0, through=4, types=[DIED, COVERED], subscription_id=None, limit=10)
    assert [(e.position, e.type) for e in page.events] == [(1, DIED), (3, COVERED), (4, DIED)]
    assert store.page(0, through=4, types=[], subscription_id=None, limit=10).events == []


def test_a_restricted_subscription_reads_events_about_its_subjects(store: EventStore) -> None:
    store.append(
        [
            event(1, idcs=OTHER_IDCS, household_id=HOUSEHOLD_ID),  # a member of its household
            event(2, idcs=OTHER_IDCS, household_id=OTHER_HOUSEHOLD),  # nobody it follows
            event(3, idcs=IDCS),  # its person, in no household
            event(1, "RSU", type_=RESCORED, idcs="", household_id=HOUSEHOLD_ID),
            event(2, "RSU", type_=RESCORED, idcs="", household_id=OTHER_HOUSEHOLD),
            event(4, idcs="", household_id=""),  # no subject at all
        ],
        T0,
    )
    subjects = [(HOUSEHOLD, HOUSEHOLD_ID), (PERSON, IDCS)]
    store.create_subscription(subscription(subjects=2), subjects)
    page = store.page(
        0, through=6, types=[DIED, RESCORED], subscription_id="sub-0123456789abcdef", limit=10
    )
    assert [e.position for e in page.events] == [1, 3, 4]
    assert page.cursor == 6


def test_a_subscription_without_subjects_reads_every_subject(store: EventStore) -> None:
    store.append([event(1, idcs=IDCS), event(2, idcs=OTHER_IDCS)], T0)
    store.create_subscription(subscription(), [])
    page = store.page(0, through=2, types=[DIED], subscription_id="sub-0123456789abcdef", limit=10)
    assert [e.position for e in page.events] == [1, 2]


def test_a_full_page_ends_its_cursor_at_its_last_event(store: EventStore) -> None:
    store.append(events(1, 10), T0)
    page = store.page(2, through=10, types=[DIED], subscription_id=None, limit=3)
    assert [e.position for e in page.events] == [3, 4, 5]
    assert (page.after, page.cursor, page.head) == (2, 5, 10)


def test_a_short_page_moves_its_cursor_to_through(store: EventStore) -> None:
    store.append([*events(1, 3), event(1, "RSU", type_=RESCORED)], T0)
    page = store.page(0, through=4, types=[RESCORED], subscription_id=None, limit=3)
    assert [e.position for e in page.events] == [4]
    assert page.cursor == 4
    empty = store.page(0, through=3, types=[RESCORED], subscription_id=None, limit=3)
    assert (empty.events, empty.cursor, empty.head) == ([], 3, 4)


def test_a_page_reads_nothing_beyond_through(store: EventStore) -> None:
    store.append(events(1, 10), T0)
    page = store.page(4, through=7, types=[DIED], subscription_id=None, limit=100)
    assert [e.position for e in page.events] == [5, 6, 7]
    assert (page.cursor, page.head) == (7, 10)


def test_a_through_beyond_the_head_is_read_as_the_head(store: EventStore) -> None:
    store.append(events(1, 3), T0)
    page = store.page(1, through=50, types=[DIED], subscription_id=None, limit=100)
    assert [e.position for e in page.events] == [2, 3]
    assert (page.cursor, page.head) == (3, 3)


def test_small_pages_read_every_matching_event_once_however_rare_its_type(
    store: EventStore,
) -> None:
    mixed = [
        event(seq, "RSU", type_=RESCORED if seq % 97 else JOINED, household_id=HOUSEHOLD_ID)
        for seq in range(1, 1201)
    ]
    store.append(mixed, T0)
    for types, limit in (([JOINED], 2), ([RESCORED, JOINED], 7), ([JOINED, RESCORED], 500)):
        got = read_all(store, types, limit=limit)
        assert [e.position for e in got] == [
            n for n, e in enumerate(mixed, start=1) if e.type in types
        ]


def test_page_arguments_are_checked(store: EventStore) -> None:
    store.append(events(1, 3), T0)
    for limit in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            store.page(0, through=3, types=[DIED], subscription_id=None, limit=limit)
    with pytest.raises(ValueError, match="through 1 cannot start after 2"):
        store.page(2, through=1, types=[DIED], subscription_id=None, limit=5)
    with pytest.raises(KeyError, match="sub-ffffffffffffffff"):
        store.page(0, through=3, types=[DIED], subscription_id="sub-ffffffffffffffff", limit=5)


# Bounds and pruning.


def test_an_empty_log_has_floor_and_head_zero(store: EventStore) -> None:
    bounds = store.bounds()
    assert (bounds.floor, bounds.head) == (0, 0)


def test_prune_removes_events_received_before_the_time_and_raises_the_floor(
    store: EventStore,
) -> None:
    store.append(events(1, 3), T0)
    store.append(events(4, 5), T0 + 10 * SECOND)
    assert store.prune(T0 + 10 * SECOND) == 3
    bounds = store.bounds()
    assert (bounds.floor, bounds.head) == (3, 5)
    assert [e.position for e in read_all(store, [DIED], after=3)] == [4, 5]
    assert store.event(event(1).event_id) is None
    assert store.prune(T0 + 10 * SECOND) == 0
    assert store.bounds().floor == 3


def test_pruning_every_event_keeps_the_head_and_the_sources_heads(store: EventStore) -> None:
    store.append([*events(1, 4), *events(1, 2, "CNSS")], T0)
    assert store.prune(T0 + 1) == 6
    bounds = store.bounds()
    assert (bounds.floor, bounds.head) == (6, 6)
    assert store.heads() == {"RNP": 4, "CNSS": 2}
    assert store.append(events(1, 5), T0 + SECOND) == 1  # 1..4 were held: only 5 is new
    assert [(e.position, e.source_seq) for e in read_all(store, [DIED], after=6)] == [(7, 5)]


def test_prune_never_lowers_the_floor(db: EventDatabase) -> None:
    store = db.open()
    store.append(events(1, 2), T0)
    db.sql("UPDATE event_log_meta SET floor = 50")  # as if a prune had gone further
    assert store.prune(T0 + 1) == 2
    bounds = store.bounds()
    assert (bounds.floor, bounds.head) == (50, 50)


# Subscriptions.


def test_a_created_subscription_reads_back_equal(store: EventStore) -> None:
    created = subscription(subjects=2, acknowledged=7)
    store.create_subscription(created, [(HOUSEHOLD, HOUSEHOLD_ID), (PERSON, IDCS)])
    assert store.subscription(created.subscription_id) == created
    assert store.subscription("sub-ffffffffffffffff") is None


def test_creating_a_subscription_twice_raises_and_keeps_the_first(store: EventStore) -> None:
    store.create_subscription(subscription(), [])
    with pytest.raises(ValueError, match="sub-0123456789abcdef exists already"):
        store.create_subscription(replace(subscription(), institution="ANSS"), [])
    found = store.subscription("sub-0123456789abcdef")
    assert found is not None
    assert found.institution == "CNSS"


def test_a_subscription_must_count_its_subjects_and_name_valid_ones(store: EventStore) -> None:
    refused: list[tuple[Subscription, list[tuple[str, str]]]] = [
        (subscription(subjects=1), [(HOUSEHOLD, HOUSEHOLD_ID), (PERSON, IDCS)]),
        (subscription(subjects=1), [("x", IDCS)]),
        (subscription(subjects=1), [(PERSON, "")]),
        (subscription(types=("a,b",)), []),
        (subscription(types=()), []),
    ]
    for made, subjects in refused:
        with pytest.raises(ValueError, match="subscription sub-0123456789abcdef") as raised:
            store.create_subscription(made, subjects)
        assert IDCS not in str(raised.value)
    assert store.subscription("sub-0123456789abcdef") is None
    store.create_subscription(subscription(subjects=1), [(PERSON, IDCS), (PERSON, IDCS)])


def test_acknowledge_raises_the_cursor_and_never_moves_it_back(store: EventStore) -> None:
    store.create_subscription(subscription(acknowledged=3), [])
    assert store.acknowledge("sub-0123456789abcdef", 10) == 10
    assert store.acknowledge("sub-0123456789abcdef", 4) == 10
    found = store.subscription("sub-0123456789abcdef")
    assert found is not None
    assert found.acknowledged == 10


def test_acknowledging_an_unknown_subscription_raises_key_error(store: EventStore) -> None:
    with pytest.raises(KeyError, match="sub-ffffffffffffffff"):
        store.acknowledge("sub-ffffffffffffffff", 1)


def test_cancel_marks_a_subscription_once(store: EventStore) -> None:
    store.create_subscription(subscription(), [])
    first = store.cancel("sub-0123456789abcdef", T0 + SECOND)
    assert first == replace(subscription(), cancelled_us=T0 + SECOND)
    assert first is not None
    assert not first.active
    assert store.cancel("sub-0123456789abcdef", T0 + 2 * SECOND) == first
    assert store.subscription("sub-0123456789abcdef") == first
    assert store.cancel("sub-ffffffffffffffff", T0) is None


# Several processes, one database; the schema.


def test_what_one_store_writes_another_reads(db: EventDatabase) -> None:
    first, second = db.open(), db.open()
    first.append(events(1, 2), T0)
    first.create_subscription(subscription(), [])
    second.acknowledge("sub-0123456789abcdef", 2)
    assert [e.position for e in read_all(second, [DIED])] == [1, 2]
    found = first.subscription("sub-0123456789abcdef")
    assert found is not None
    assert found.acknowledged == 2


def test_a_store_survives_reopening(db: EventDatabase) -> None:
    store = db.open()
    store.append(events(1, 3), T0)
    store.prune(T0 + 1)
    store.append(events(4, 4), T0 + SECOND)
    store.create_subscription(subscription(), [])
    store.acknowledge("sub-0123456789abcdef", 4)
    db.close()
    again = db.open()
    assert (again.bounds().floor, again.bounds().head) == (3, 4)
    assert again.heads() == {"RNP": 4}
    found = again.subscription("sub-0123456789abcdef")
    assert found is not None
    assert found.acknowledged == 4


def test_migrations_are_recorded_and_a_reopen_does_not_migrate_again(
    db: EventDatabase,
) -> None:
    run_together(3, lambda _: db.open())
    db.close()
    db.open()
    rows = db.sql(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    migrations = SQLITE if db.backend == "sqlite" else POSTGRES
    assert [v for (v,) in rows] == [m.version for m in migrations]
    assert db.sql("SELECT count(*) FROM event_log_meta") == [(1,)]


def test_a_database_with_a_newer_schema_is_refused(db: EventDatabase) -> None:
    db.open()
    db.close()
    db.sql(f"INSERT INTO {MIGRATIONS_TABLE} (version, applied_at) VALUES (999, '2100-01-01')")
    with pytest.raises(SchemaTooNewError, match="event database"):
        db.open()


def test_another_url_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported event database URL scheme: 'mysql'"):
        open_event_store("mysql://somewhere/jisr", tmp_path)


# -- the gateway's derived events --------------------------------------------------------


def _derived(seq: int, cause: str) -> NewEvent:
    return replace(event(seq, "JISR"), event_id=f"{cause}/eligibility/ASD")


def test_derived_events_offered_again_by_a_replica_are_skipped(db: EventDatabase) -> None:
    first, second = db.open(), db.open()
    offered = [event(1, "RSU"), _derived(1, "RSU-2026-11-000001")]
    assert first.append(offered, T0) == 2
    assert second.append(offered, T0) == 0


def test_a_derived_number_another_replica_took_refuses_the_whole_append(
    db: EventDatabase,
) -> None:
    """Two replicas number their derived events from the same head at once, from different
    sources' changes: the second must not take the first's event for its own."""
    first, second = db.open(), db.open()
    assert first.append([event(1, "RSU"), _derived(1, "RSU-2026-11-000001")], T0) == 2
    with pytest.raises(NumberTakenError, match="JISR: sequence 1 holds another event"):
        second.append([event(1, "CNSS"), _derived(1, "CNSS-2026-11-000001")], T0)
    assert "CNSS" not in second.heads()
