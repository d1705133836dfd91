"""The contest stores: one suite, run against SQLite and against PostgreSQL.

What the services, the console and the escalation sweep rely on must hold on both
backends: a case reads back as stored, a step applies only over the version read (exactly
one of two racing steps wins), the queues come in their order with their filters, and the
history cannot be rewritten, even by SQL behind the store's back. PostgreSQL tests get a
fresh schema each (tests/support/databases.py says when they run).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.contests import cases
from gateway.contests.cases import (
    ANSWERED,
    CLOSED,
    DAY_US,
    ESCALATED,
    OPEN,
    STATES,
    SWEEP,
    Actor,
    Case,
    CaseEvent,
    Step,
)
from gateway.contests.migrations import MIGRATIONS_TABLE, POSTGRES, SQLITE
from gateway.contests.store import (
    FILE_NAME,
    ContestStore,
    DuplicateCaseError,
    open_contest_store,
)
from gateway.storage.migrations import SchemaTooNewError
from tests.support import databases
from tests.support.threads import run_together

T0 = 1_750_000_000_000_000
DUE = T0 + 30 * DAY_US
CITIZEN = Actor("citizen", "PORTAL_CNIE", "ref-7f3a")
DPO = Actor("dpo", "CNSS", "officer-1a2b3c4d5e6f7a8b")
REGULATOR = Actor("regulator", "CNDP", "officer-cndp000000000001")


ContestDatabase = databases.StoreDatabase[ContestStore]


def _database(backend: str, state_dir: Path, url: str | None) -> ContestDatabase:
    return databases.StoreDatabase(backend, state_dir, url, open_contest_store, FILE_NAME)


@contextmanager
def contest_database(backend: str, state_dir: Path) -> Iterator[ContestDatabase]:
    with databases.for_backend(backend) as url:
        db = _database(backend, state_dir, url)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContestDatabase]:
    with contest_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def store(db: ContestDatabase) -> ContestStore:
    return db.open()


def subject(n: int = 0) -> str:
    return f"{n:064x}"


def new_case(
    at_us: int = T0,
    *,
    institution: str = "CNSS",
    portal: str = "PORTAL_CNIE",
    n: int = 0,
) -> tuple[Case, CaseEvent]:
    return cases.open_case(
        f"node-a:{n + 1}",
        subject_hash=subject(n),
        institution=institution,
        portal=portal,
        statement=f"Why was record {n + 1} read?\nPlease explain.",
        actor=Actor("citizen", portal, f"ref-{n}"),
        now_us=at_us,
    )


def stored(store: ContestStore, at_us: int = T0, **kwargs: Any) -> Case:
    case, event = new_case(at_us, **kwargs)
    store.create(case, event)
    return case


def step(store: ContestStore, made: tuple[Case, CaseEvent], expected: int | None = None) -> Case:
    """Apply a transition's result over the version before it; assert it applied."""
    case, event = made
    assert store.apply(case, event, case.version - 1 if expected is None else expected)
    return case


# Creating and reading.


def test_a_created_case_and_its_opening_read_back_equal(store: ContestStore) -> None:
    case, event = new_case()
    store.create(case, event)
    assert store.case(case.case_id) == case
    assert store.history(case.case_id) == [event]


def test_an_unknown_case_has_no_row_and_no_history(store: ContestStore) -> None:
    assert store.case("case-0000000000000000") is None
    assert store.history("case-0000000000000000") == []


def test_creating_a_case_twice_raises_and_keeps_the_first(store: ContestStore) -> None:
    case, event = new_case()
    store.create(case, event)
    with pytest.raises(DuplicateCaseError, match="exists already"):
        store.create(replace(case, statement="Another."), replace(event, text="Another."))
    assert store.case(case.case_id) == case
    assert store.history(case.case_id) == [event]


def test_create_takes_only_a_first_step(store: ContestStore) -> None:
    case, _ = new_case()
    later, answer = cases.answer(case, DPO, "An answer.", T0 + 1)
    with pytest.raises(ValueError, match="not one step"):
        store.create(later, answer)
    assert store.case(case.case_id) is None


# Applying steps.


def test_steps_applied_over_the_right_version_build_the_history(store: ContestStore) -> None:
    case, opening = new_case()
    store.create(case, opening)
    answered, answer = cases.answer(case, DPO, "Because of art. 4.", T0 + DAY_US)
    assert store.apply(answered, answer, 1)
    escalated, escalation = cases.escalate(answered, CITIZEN, "Not so.", T0 + 2 * DAY_US)
    assert store.apply(escalated, escalation, 2)
    assert store.case(case.case_id) == escalated
    assert store.history(case.case_id) == [opening, answer, escalation]


def test_a_step_over_a_stale_version_writes_nothing(store: ContestStore) -> None:
    case = stored(store)
    withdrawn = step(store, cases.withdraw(case, CITIZEN, T0 + 1))
    late, answer = cases.answer(case, DPO, "Too late: withdrawn.", T0 + 2)
    assert store.apply(late, answer, 1) is False
    assert store.case(case.case_id) == withdrawn
    assert [e.action for e in store.history(case.case_id)] == ["open", "withdraw"]


def test_a_step_on_an_unknown_case_writes_nothing(store: ContestStore) -> None:
    case, _ = new_case()
    answered, answer = cases.answer(case, DPO, "An answer.", T0 + 1)
    assert store.apply(answered, answer, 1) is False
    assert store.history(case.case_id) == []


def test_apply_refuses_a_case_and_event_that_are_not_one_step(store: ContestStore) -> None:
    case = stored(store)
    answered, answer = cases.answer(case, DPO, "An answer.", T0 + 1)
    with pytest.raises(ValueError, match="not one step"):
        store.apply(answered, answer, 2)
    with pytest.raises(ValueError, match="not one step"):
        store.apply(answered, replace(answer, case_id="case-ffffffffffffffff"), 1)
    assert store.case(case.case_id) == case


def test_apply_writes_only_what_a_transition_changes(store: ContestStore) -> None:
    case = stored(store)
    answered, answer = cases.answer(case, DPO, "An answer.", T0 + 1)
    forged = replace(answered, institution="ANSS", subject_hash=subject(9), statement="Forged.")
    assert store.apply(forged, answer, 1)
    assert store.case(case.case_id) == answered


def test_of_eight_threads_applying_over_one_version_exactly_one_wins(db: ContestDatabase) -> None:
    first, second = db.open(), db.open()
    case = stored(first)

    def attempt(i: int) -> bool:
        store = first if i % 2 else second
        if i % 3:
            new, event = cases.answer(case, DPO, f"Answer {i}.", T0 + i)
        else:
            new, event = cases.withdraw(case, CITIZEN, T0 + i)
        return store.apply(new, event, 1)

    results = run_together(8, attempt)
    assert sorted(results, key=str) == [False] * 7 + [True]
    history = first.history(case.case_id)
    assert [e.seq for e in history] == [1, 2]
    final = first.case(case.case_id)
    assert final is not None
    assert final.version == 2
    assert (final.state, final.updated_us) == (history[1].to_state, history[1].at_us)


# Queues.


def test_a_dpos_queue_is_its_institutions_cases_in_the_states_asked_oldest_due_first(
    store: ContestStore,
) -> None:
    late = stored(store, T0 + 3 * DAY_US, n=1)
    early = stored(store, T0 + DAY_US, n=2)
    stored(store, T0, institution="ANSS", n=3)
    answered = step(store, cases.answer(stored(store, T0 + 2 * DAY_US, n=4), DPO, "A.", T0))
    step(store, cases.withdraw(stored(store, T0, n=5), Actor("citizen", "PORTAL_CNIE", "r"), T0))
    assert store.cases_for_institution("CNSS", [OPEN], 10) == [early, late]
    assert store.cases_for_institution("CNSS", [OPEN, ANSWERED], 10) == [early, answered, late]
    assert store.cases_for_institution("CNSS", [OPEN, ANSWERED], 2) == [early, answered]
    assert [c.state for c in store.cases_for_institution("CNSS", STATES, 10)] == [
        CLOSED,
        OPEN,
        ANSWERED,
        OPEN,
    ]
    assert store.cases_for_institution("CNSS", [], 10) == []
    assert store.cases_for_institution("CNDP", STATES, 10) == []


def test_cases_due_at_the_same_time_come_by_case_id(store: ContestStore) -> None:
    made = [stored(store, T0, n=n) for n in range(6)]
    queue = store.cases_for_institution("CNSS", [OPEN], 10)
    assert queue == sorted(made, key=lambda c: c.case_id)


def test_queue_arguments_are_checked(store: ContestStore) -> None:
    with pytest.raises(ValueError, match="unknown case states"):
        store.cases_for_institution("CNSS", ["pending"], 10)
    for limit in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            store.escalated(limit)
        with pytest.raises(ValueError, match="limit"):
            store.overdue(T0, limit)


def test_a_citizens_cases_are_those_of_its_subject_and_portal_newest_first(
    store: ContestStore,
) -> None:
    first = stored(store, T0, n=1)
    second, event = cases.open_case(
        "node-b:9",
        subject_hash=subject(1),
        institution="ANSS",
        portal="PORTAL_CNIE",
        statement="And this one?",
        actor=CITIZEN,
        now_us=T0 + DAY_US,
    )
    store.create(second, event)
    stored(store, T0, n=1, portal="PORTAL_MOBILE")
    stored(store, T0, n=2)
    assert store.cases_for_subject(subject(1), "PORTAL_CNIE") == [second, first]
    assert store.cases_for_subject(subject(3), "PORTAL_CNIE") == []


def test_the_regulators_queue_is_escalated_cases_longest_waiting_first(
    store: ContestStore,
) -> None:
    by_sweep = step(store, cases.escalate_overdue(stored(store, T0, n=1), SWEEP, DUE + 5))
    answered = step(store, cases.answer(stored(store, T0, n=2), DPO, "A.", T0 + 1))
    by_citizen = step(
        store, cases.escalate(answered, Actor("citizen", "PORTAL_CNIE", "r"), "No.", T0 + 2)
    )
    decided = step(store, cases.escalate_overdue(stored(store, T0, n=3), SWEEP, DUE))
    step(store, cases.decide(decided, REGULATOR, "upheld", "Unlawful.", DUE + 9))
    stored(store, T0, n=4)
    assert store.escalated(10) == [by_citizen, by_sweep]
    assert store.escalated(1) == [by_citizen]


def test_the_sweep_finds_open_cases_due_at_or_before_now_oldest_due_first(
    store: ContestStore,
) -> None:
    older = stored(store, T0, n=1)
    newer = stored(store, T0 + DAY_US, n=2)
    step(store, cases.answer(stored(store, T0, n=3), DPO, "A.", T0 + 1))
    assert store.overdue(DUE - 1, 10) == []
    assert store.overdue(DUE, 10) == [older]
    assert store.overdue(DUE + DAY_US, 10) == [older, newer]
    assert store.overdue(DUE + DAY_US, 1) == [older]
    for case in store.overdue(DUE + DAY_US, 10):
        assert cases.overdue(case, DUE + DAY_US)
        step(store, cases.escalate_overdue(case, SWEEP, DUE + DAY_US))
    assert store.overdue(DUE + DAY_US, 10) == []


# The history cannot be rewritten.


def test_the_history_refuses_a_direct_update_or_delete(db: ContestDatabase) -> None:
    store = db.open()
    case = stored(store)
    step(store, cases.answer(case, DPO, "The answer.", T0 + 1))
    before = store.history(case.case_id)
    errors = (sqlite3.DatabaseError, psycopg.Error)
    with pytest.raises(errors, match="append-only"):
        db.sql(
            "UPDATE contest_event SET text = 'Something else.' WHERE case_id = ?", [case.case_id]
        )
    with pytest.raises(errors, match="append-only"):
        db.sql("DELETE FROM contest_event WHERE case_id = ?", [case.case_id])
    if db.backend == "postgresql":
        with pytest.raises(errors, match="append-only"):
            db.sql("TRUNCATE contest_event")
    assert store.history(case.case_id) == before


# Several processes, one database; the schema.


def test_a_step_through_one_store_is_seen_by_another(db: ContestDatabase) -> None:
    gateway, console = db.open(), db.open()
    case = stored(gateway)
    answered = step(console, cases.answer(case, DPO, "An answer.", T0 + 1))
    assert gateway.case(case.case_id) == answered
    assert gateway.cases_for_institution("CNSS", [ANSWERED], 5) == [answered]


def test_a_store_survives_reopening(db: ContestDatabase) -> None:
    store = db.open()
    case = stored(store)
    escalated = step(store, cases.escalate_overdue(case, SWEEP, DUE))
    db.close()
    again = db.open()
    assert again.case(case.case_id) == escalated
    assert [e.to_state for e in again.history(case.case_id)] == [OPEN, ESCALATED]


def test_migrations_are_idempotent_and_concurrent_opens_migrate_once(
    db: ContestDatabase,
) -> None:
    run_together(4, lambda _: db.open())
    db.close()
    db.open()
    versions = db.sql(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    migrations = SQLITE if db.backend == "sqlite" else POSTGRES
    assert [v for (v,) in versions] == [m.version for m in migrations]


def test_a_database_with_a_newer_schema_is_refused(db: ContestDatabase) -> None:
    db.open()
    db.close()
    db.sql(f"INSERT INTO {MIGRATIONS_TABLE} (version, applied_at) VALUES (999, '2100-01-01')")
    with pytest.raises(SchemaTooNewError, match="contest database"):
        db.open()


def test_another_url_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported contest database URL scheme: 'mysql'"):
        open_contest_store("mysql://somewhere/jisr", tmp_path)


def test_steps_between_are_the_steps_taken_in_the_window_with_their_case(
    store: ContestStore,
) -> None:
    """What the transparency indicators count: each step in [since, until), oldest first,
    with its case's institution and opening time."""
    case, opening = new_case(T0, institution="ANSS")
    store.create(case, opening)
    answered, answer = cases.answer(case, Actor("dpo", "ANSS", "o1"), "Art. 4.", T0 + DAY_US)
    assert store.apply(answered, answer, 1)
    other = stored(store, T0 + 3 * DAY_US, n=1)
    window = store.steps_between(T0 + 1, T0 + 4 * DAY_US)
    assert window == [
        Step("ANSS", T0, case.subject_hash, answer),
        Step("CNSS", other.opened_us, other.subject_hash, store.history(other.case_id)[0]),
    ]
    assert store.steps_between(T0, T0 + 1) == [Step("ANSS", T0, case.subject_hash, opening)]
