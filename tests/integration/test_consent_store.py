"""The consent stores: one suite, run against SQLite and against PostgreSQL.

Every behaviour the gateway relies on must hold on both backends, since development and
CI use the embedded file and production a shared server. PostgreSQL tests get a fresh
schema each (tests/support/databases.py says when they run).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from consent.migrations import MIGRATIONS_TABLE, POSTGRES, SQLITE
from consent.model import ConsentRecord, Status, SubjectKind, UseCap, verify_history
from consent.store import ConsentConflictError, ConsentStore
from consent.store_postgres import PostgresConsentStore
from consent.store_sqlite import SQLiteConsentStore
from gateway.storage.migrations import SchemaTooNewError
from tests.support import databases
from tests.support.databases import ConsentDatabase
from tests.support.threads import run_together

HOUSEHOLD = SubjectKind.HOUSEHOLD
PERSON = SubjectKind.PERSON


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsentDatabase]:
    with databases.consent_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def store(db: ConsentDatabase) -> ConsentStore:
    return db.open()


def grant(
    consent_id: str,
    subject: str = "H-0001",
    grantee: str = "CNSS",
    kind: SubjectKind = HOUSEHOLD,
    use_cap: UseCap | None = None,
) -> ConsentRecord:
    """A sealed revision 1."""
    return ConsentRecord(
        consent_id=consent_id,
        revision=1,
        subject_kind=kind,
        subject=subject,
        grantor="AB123456",
        grantee=grantee,
        purposes=("eligibility.check", "social.assistance"),
        scopes=("household.composition", "household.score_band"),
        valid_from=1_700_000_000,
        valid_until=1_800_000_000,
        use_cap=use_cap,
        status=Status.ACTIVE,
        collected_by="ANSS",
        collection_method="counter",
        artefact="eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
        recorded_at=1_700_000_100,
        prev_hash="",
    ).sealed()


def test_appended_records_read_back_equal(store: ConsentStore) -> None:
    capped = grant("c-capped", use_cap=UseCap(max_uses=4, period_s=86_400))
    plain = replace(grant("c-plain", subject="IDCS-Ⅱ-é", kind=PERSON), purposes=()).sealed()
    for record in (capped, plain):
        store.append(record)
    assert store.latest("c-capped") == capped
    assert store.history("c-capped") == [capped]
    assert store.latest("c-plain") == plain
    assert store.history("c-plain") == [plain]
    assert store.latest("c-unknown") is None
    assert store.history("c-unknown") == []


def test_a_revocation_follows_the_grant_and_the_history_verifies(store: ConsentStore) -> None:
    first = grant("c-1")
    store.append(first)
    revoked = first.revoked(at=1_700_001_000)
    store.append(revoked)
    assert store.latest("c-1") == revoked
    history = store.history("c-1")
    assert history == [first, revoked]
    assert verify_history(history) is None


def test_the_database_refuses_to_update_or_delete_a_revision(
    db: ConsentDatabase, store: ConsentStore
) -> None:
    store.append(grant("c-1"))
    with pytest.raises(Exception, match="append-only"):
        db.sql("UPDATE consent_revision SET grantee = 'OTHER' WHERE consent_id = 'c-1'")
    with pytest.raises(Exception, match="append-only"):
        db.sql("DELETE FROM consent_revision WHERE consent_id = 'c-1'")
    assert store.history("c-1") == [grant("c-1")]


def test_a_row_tampered_behind_the_store_is_named_by_verify_history(
    db: ConsentDatabase, store: ConsentStore
) -> None:
    first = grant("c-1")
    store.append(first)
    store.append(first.revoked(at=1_700_001_000))
    db.bypass_append_only()  # someone with the database owner's rights
    db.sql(
        "UPDATE consent_revision SET grantee = ? WHERE consent_id = ? AND revision = ?",
        ("EVIL", "c-1", 1),
    )
    assert verify_history(store.history("c-1")) == "revision 1 was altered (hash mismatch)"


def test_a_revision_out_of_order_conflicts(store: ConsentStore) -> None:
    first = grant("c-1")
    store.append(first)
    skipping = replace(first.revoked(at=1_700_001_000), revision=3).sealed()
    with pytest.raises(ConsentConflictError, match="does not follow"):
        store.append(skipping)
    orphan = grant("c-2").revoked(at=1_700_001_000)  # revision 2 of a consent never granted
    with pytest.raises(ConsentConflictError):
        store.append(orphan)
    assert store.history("c-1") == [first]
    assert store.history("c-2") == []


def test_a_revision_with_a_wrong_prev_hash_conflicts(store: ConsentStore) -> None:
    first = grant("c-1")
    store.append(first)
    wrong = replace(first.revoked(at=1_700_001_000), prev_hash="0" * 64).sealed()
    with pytest.raises(ConsentConflictError, match="does not follow"):
        store.append(wrong)
    not_first = replace(grant("c-2"), prev_hash=first.hash).sealed()
    with pytest.raises(ConsentConflictError):
        store.append(not_first)
    assert store.history("c-1") == [first]


def test_appending_a_revision_twice_conflicts(store: ConsentStore) -> None:
    first = grant("c-1")
    store.append(first)
    with pytest.raises(ConsentConflictError, match="exists already"):
        store.append(first)
    revoked = first.revoked(at=1_700_001_000)
    store.append(revoked)
    with pytest.raises(ConsentConflictError, match="exists already"):
        store.append(revoked)
    assert store.history("c-1") == [first, revoked]


def test_an_unsealed_record_is_refused(store: ConsentStore) -> None:
    with pytest.raises(ValueError, match="not sealed"):
        store.append(replace(grant("c-1"), hash=""))
    with pytest.raises(ValueError, match="not sealed"):
        store.append(replace(grant("c-1"), grantee="OTHER"))  # fields changed after sealing


def test_of_two_concurrent_appenders_of_a_revision_exactly_one_wins(db: ConsentDatabase) -> None:
    # Two stores: separate connections, as two gateway replicas (or processes) have.
    replicas = [db.open(), db.open()]
    latest = grant("c-1")
    replicas[0].append(latest)
    for round_ in range(20):
        candidates = [
            replace(latest.revoked(at=1_700_001_000 + round_), artefact=f"replica-{i}").sealed()
            for i in range(2)
        ]
        outcomes = run_together(2, lambda i: replicas[i].append(candidates[i]))  # noqa: B023
        winners = [c for c, o in zip(candidates, outcomes, strict=True) if o is None]
        losers = [o for o in outcomes if o is not None]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1
        assert isinstance(losers[0], ConsentConflictError), losers
        latest = winners[0]
        assert replicas[1].latest("c-1") == latest
    history = replicas[0].history("c-1")
    assert len(history) == 21
    assert verify_history(history) is None


def test_for_subjects_returns_only_latest_matching_revisions_in_one_query(
    db: ConsentDatabase, store: ConsentStore
) -> None:
    subjects = [(HOUSEHOLD if i % 2 else PERSON, f"S-{i:04d}") for i in range(1_000)]
    expected: dict[str, ConsentRecord] = {}
    for i, (kind, subject) in enumerate(subjects):
        if i % 3:
            continue
        record = grant(f"c-{i:04d}", subject=subject, kind=kind)
        store.append(record)
        if i % 2 == 0:  # revoked: the latest revision is the revocation
            record = record.revoked(at=1_700_001_000)
            store.append(record)
        expected[record.consent_id] = record
    for i in range(0, 1_000, 20):  # same subjects, another grantee
        kind, subject = subjects[i]
        store.append(grant(f"other-{i:04d}", subject=subject, kind=kind, grantee="ANSS"))
    for i in range(50):  # not asked about, or asked about with the other kind
        store.append(grant(f"unasked-{i:04d}", subject=f"U-{i:04d}"))
        kind, subject = subjects[i]
        other_kind = PERSON if kind == HOUSEHOLD else HOUSEHOLD
        store.append(grant(f"kind-{i:04d}", subject=subject, kind=other_kind))

    assert isinstance(store, SQLiteConsentStore | PostgresConsentStore)
    before = store.statements
    found = store.for_subjects(subjects, "CNSS")
    assert store.statements - before == 1
    assert {r.consent_id: r for r in found} == expected
    assert len(found) == len(expected) == 334
    assert store.for_subjects(subjects[:1] * 3, "CNSS") == [expected["c-0000"]]
    assert store.for_subjects([], "CNSS") == []


def test_list_by_subject_pages_through_25_consents_without_gap_or_repeat(
    store: ConsentStore,
) -> None:
    ids = [f"c-{i:03d}" for i in range(25)]
    latest: dict[str, ConsentRecord] = {}
    for n, consent_id in enumerate(reversed(ids)):  # appended out of id order
        record = grant(consent_id, subject="H-7", grantee=f"INST-{n % 3}")
        store.append(record)
        if n % 4 == 0:
            record = record.revoked(at=1_700_001_000)
            store.append(record)
        latest[consent_id] = record
    store.append(grant("c-elsewhere", subject="H-8"))
    store.append(grant("c-person", subject="H-7", kind=PERSON))

    pages: list[list[ConsentRecord]] = []
    token = ""
    while True:
        page, token = store.list_by_subject(HOUSEHOLD, "H-7", 10, token)
        pages.append(page)
        if not token:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [r for p in pages for r in p] == [latest[i] for i in sorted(ids)]


def test_list_by_subject_refuses_bad_page_requests(store: ConsentStore) -> None:
    for size in (0, 501):
        with pytest.raises(ValueError, match="page_size"):
            store.list_by_subject(HOUSEHOLD, "H-7", size)
    with pytest.raises(ValueError, match="page token"):
        store.list_by_subject(HOUSEHOLD, "H-7", 10, "%%%")
    assert store.list_by_subject(HOUSEHOLD, "H-7", 500) == ([], "")


def test_count_use_counts_per_window(store: ConsentStore) -> None:
    assert [store.count_use("c-1", 0) for _ in range(3)] == [1, 2, 3]
    assert store.count_use("c-1", 86_400) == 1
    assert store.count_use("c-2", 0) == 1
    assert store.count_use("c-1", 0) == 4


def test_count_use_is_atomic_under_8_threads_of_50_uses(db: ConsentDatabase) -> None:
    stores = [db.open(), db.open()]  # two processes' worth of connections

    def fifty(i: int) -> list[int]:
        return [stores[i % 2].count_use("c-1", 3_600) for _ in range(50)]

    results = run_together(8, fifty)
    counts = sorted(n for r in results if isinstance(r, list) for n in r)
    assert counts == list(range(1, 401)), [r for r in results if not isinstance(r, list)]
    assert stores[0].count_use("c-1", 3_600) == 401


def test_changed_since_reports_a_revocation_made_through_another_replica(
    db: ConsentDatabase,
) -> None:
    here, there = db.open(), db.open()
    first = grant("c-1")
    here.append(first)
    here.append(grant("c-2"))
    changed, cursor = here.changed_since(0)
    assert changed == ["c-1", "c-2"]
    assert here.changed_since(cursor) == ([], cursor)

    there.append(first.revoked(at=1_700_001_000))
    changed, after = here.changed_since(cursor)
    assert changed == ["c-1"]
    assert after > cursor
    assert here.changed_since(after) == ([], after)
    changed, partial = here.changed_since(0, limit=1)
    assert changed == ["c-1"]
    assert 0 < partial < cursor


def test_migrations_are_idempotent(db: ConsentDatabase) -> None:
    migrations = SQLITE if db.backend == "sqlite" else POSTGRES
    db.open().append(grant("c-1"))
    db.close()
    reopened = db.open()
    versions = db.sql(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    assert [v for (v,) in versions] == [m.version for m in migrations]
    assert [v for v, _ in enumerate(migrations, start=1)] == [m.version for m in migrations]
    assert reopened.latest("c-1") == grant("c-1")


def test_processes_opening_a_new_database_together_migrate_it_once(db: ConsentDatabase) -> None:
    opened = run_together(4, lambda _: db.open())
    assert all(isinstance(s, SQLiteConsentStore | PostgresConsentStore) for s in opened), opened
    versions = db.sql(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    migrations = SQLITE if db.backend == "sqlite" else POSTGRES
    assert [v for (v,) in versions] == [m.version for m in migrations]


def test_a_database_with_a_newer_schema_is_refused(db: ConsentDatabase) -> None:
    db.open()
    db.close()
    db.sql(f"INSERT INTO {MIGRATIONS_TABLE} (version, applied_at) VALUES (999, '2100-01-01')")
    with pytest.raises(SchemaTooNewError, match="schema version 999"):
        db.open()


def test_a_store_survives_reopening(db: ConsentDatabase) -> None:
    first = grant("c-1", use_cap=UseCap(2, 60))
    store = db.open()
    store.append(first)
    store.append(first.revoked(at=1_700_001_000))
    store.count_use("c-1", 0)
    db.close()
    again = db.open()
    assert again.history("c-1") == [first, first.revoked(at=1_700_001_000)]
    assert again.count_use("c-1", 0) == 2
    again.append(first.revoked(at=1_700_001_000).revoked(at=1_700_002_000))
    assert verify_history(again.history("c-1")) is None


# The rule deciding whether PostgreSQL tests run (tests/support/databases.py).


def test_without_ci_an_unreachable_test_server_means_skip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(databases.URL_ENV, "postgresql://postgres@127.0.0.1:1/none")
    monkeypatch.delenv("CI", raising=False)
    assert databases.postgres_url() is None


def test_in_ci_an_unreachable_test_server_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(databases.URL_ENV, "postgresql://postgres@127.0.0.1:1/none")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(databases.PostgresUnavailableError, match="CI=true"):
        databases.postgres_url()


def test_the_schema_option_is_added_to_the_url() -> None:
    url = databases.with_schema("postgresql://u@h:5432/db?sslmode=disable", "s1")
    assert url == "postgresql://u@h:5432/db?sslmode=disable&options=-csearch_path%3Ds1"


def test_revisions_between_are_the_grants_and_revocations_recorded_then(
    store: ConsentStore,
) -> None:
    """What the transparency indicators count, by when each revision was recorded."""
    first, second = grant("c-1"), grant("c-2")
    store.append(first)
    store.append(second)
    revoked = first.revoked(at=1_700_001_000)
    store.append(revoked)
    assert store.revisions_between(1_700_000_000, 1_700_000_101) == [first, second]
    assert store.revisions_between(1_700_000_101, 1_700_002_000) == [revoked]


def test_expiring_between_are_active_consents_whose_validity_ends_then(
    store: ConsentStore,
) -> None:
    active, revoked = grant("c-1"), grant("c-2")
    store.append(active)
    store.append(revoked)
    store.append(revoked.revoked(at=1_700_001_000))
    assert store.expiring_between(1_799_999_999, 1_800_000_001) == [active]
    assert store.expiring_between(1_800_000_001, 1_900_000_000) == []
