"""The audit stores and the group-commit writer: one suite, on SQLite and on PostgreSQL.

PostgreSQL tests get a fresh schema each (tests/support/databases.py says when they run).
Checkpoints are "signed" by a fake here: verifying signatures is the chain verifier's job,
not the store's; the store only has to give back exactly what it was given.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consent.store import open_store
from gateway.audit import merkle, store_postgres, store_sqlite
from gateway.audit import store_common as audit_store
from gateway.audit.migrations import MIGRATIONS_TABLE, POSTGRES, SQLITE
from gateway.audit.record import GENESIS, AuditRecord, Checkpoint, link
from gateway.audit.store import (
    AuditStore,
    ChainConflictError,
    Query,
    ReplayError,
    open_audit_store,
)
from gateway.audit.writer import AuditUnavailable, AuditWriter
from gateway.storage.migrations import SchemaTooNewError
from tests.support import databases
from tests.support.threads import run_together

T0 = 1_750_000_000_000_000  # microseconds since the epoch
METHOD = "/jisr.v1.RegistryExchange/GetHouseholdStatus"
BATCH_METHOD = "/jisr.v1.RegistryExchange/VerifyEligibilityBatch"


@dataclass
class AuditDatabase:
    """One audit database under test, and direct SQL on it (what a DBA could do)."""

    backend: str  # "sqlite" or "postgresql"
    data_dir: Path
    url: str | None  # None for SQLite
    stores: list[AuditStore] = field(default_factory=list)

    def open(self) -> AuditStore:
        """A new store on this database, as another gateway process or replica opens it."""
        store = open_audit_store(self.url, self.data_dir)
        self.stores.append(store)
        return store

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the store (placeholders `?` on both backends)."""
        if self.url is None:
            conn = sqlite3.connect(self.data_dir / "audit.sqlite", isolation_level=None)
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.url, autocommit=True) as pg:
            cur = pg.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        for store in self.stores:
            store.close()
        self.stores.clear()


@contextmanager
def audit_database(backend: str, data_dir: Path) -> Iterator[AuditDatabase]:
    if backend == "sqlite":
        db = AuditDatabase(backend, data_dir, None)
        try:
            yield db
        finally:
            db.close()
        return
    with databases.postgres_schema() as url:
        db = AuditDatabase(backend, data_dir, url)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditDatabase]:
    with audit_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def store(db: AuditDatabase) -> AuditStore:
    return db.open()


def draft(
    i: int,
    *,
    node: str = "gw-a",
    requester: str = "CNSS",
    jti: str | None = None,
    part: int = 0,
    subjects: tuple[str, ...] | None = None,
    **changes: Any,
) -> AuditRecord:
    """An unlinked record (seq 0, no hashes), distinct per i."""
    record = AuditRecord(
        node=node,
        seq=0,
        at_us=T0 + i * 1_000,
        trace_id=f"{i:032x}",
        requester=requester,
        requester_sub=f"officer-{i % 3}",
        method=METHOD,
        purpose="eligibility.check",
        basis="loi-72-18:art-12",
        subjects=subjects if subjects is not None else (f"h{i % 5:063x}", f"p{i:063x}"),
        fields=("household.composition", "household.score_band"),
        decision="permit",
        reason="",
        rh=f"rh-{i}",
        sh=f"sh-{i}",
        jti=jti if jti is not None else f"jti-{node}-{i}",
        part=part,
        latency_us=100 + i,
    )
    return replace(record, **changes) if changes else record


def chain(drafts: Sequence[AuditRecord], head: tuple[int, str] = (0, GENESIS)) -> list[AuditRecord]:
    """The drafts linked one after another onto `head`."""
    out: list[AuditRecord] = []
    seq, prev = head
    for d in drafts:
        record = link(seq, prev, d)
        out.append(record)
        seq, prev = record.seq, record.hash
    return out


def append(store: AuditStore, drafts: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Link the drafts onto their node's stored head and store them as one batch."""
    linked = chain(drafts, store.head(drafts[0].node))
    store.append_batch(linked)
    return linked


def fake_sign(cp: Checkpoint) -> Checkpoint:
    """Not a signature: the chain verifier's tests sign for real."""
    return replace(cp, signature=f"fake.{cp.node}.{cp.seq}")


def assert_contiguous(records: Sequence[AuditRecord], first_seq: int = 1) -> None:
    assert [r.seq for r in records] == list(range(first_seq, first_seq + len(records)))
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    for r in records:
        assert r.sealed().hash == r.hash


# The store.


def test_appended_records_read_back_equal(store: AuditStore) -> None:
    drafts = [
        draft(1),
        draft(2, subjects=(), fields=(), decision="deny", reason="CONSENT_REVOKED", sh=""),
        draft(3, subjects=("h1", "h1", "h2"), jti="", trace_id=""),  # repeated subject
        draft(4, requester="ANSS-é-Ⅱ", basis="consent:c-1,c-2", part=7, method=BATCH_METHOD),
        draft(5, subjects=tuple(f"s{k:063x}" for k in range(1_000)), latency_us=2**40),
    ]
    linked = append(store, drafts)
    assert linked[0].prev_hash == GENESIS
    assert list(store.records()) == linked
    assert list(store.records("gw-a")) == linked
    assert store.head("gw-a") == (5, linked[-1].hash)
    assert store.nodes() == ["gw-a"]


def test_head_is_per_node_and_genesis_for_an_unknown_node(store: AuditStore) -> None:
    assert store.head("gw-a") == (0, GENESIS)
    a = append(store, [draft(i) for i in range(3)])
    b = append(store, [draft(i, node="gw-b") for i in range(2)])
    a += append(store, [draft(i) for i in range(3, 5)])
    assert store.head("gw-a") == (5, a[-1].hash)
    assert store.head("gw-b") == (2, b[-1].hash)
    assert store.head("gw-c") == (0, GENESIS)
    assert_contiguous(a)


def test_records_stream_by_node_then_seq_in_chunks(store: AuditStore) -> None:
    expected: dict[str, list[AuditRecord]] = {"gw-b": [], "gw-a": [], "gw-a2": []}
    for round_ in range(5):  # interleaved appends of three nodes
        for node in expected:
            expected[node] += append(
                store, [draft(round_ * 10 + k, node=node) for k in range(round_ + 1)]
            )
    everything = expected["gw-a"] + expected["gw-a2"] + expected["gw-b"]
    for batch in (1, 4, 15, 10_000):
        assert list(store.records(batch=batch)) == everything
    assert list(store.records("gw-a2", batch=4)) == expected["gw-a2"]
    assert list(store.records("gw-b", after_seq=12, batch=2)) == expected["gw-b"][12:]
    assert list(store.records(after_seq=14)) == [r for r in everything if r.seq > 14]
    assert list(store.records("gw-none")) == []
    assert store.nodes() == ["gw-a", "gw-a2", "gw-b"]


def test_checkpoints_read_back_in_order_and_name_their_nodes(store: AuditStore) -> None:
    records = append(store, [draft(i) for i in range(3)])
    cps = [
        fake_sign(Checkpoint("gw-a", 2, records[1].hash, T0 + 5)),
        fake_sign(Checkpoint("gw-z", 9, "f" * 64, T0 + 6)),  # records gone: nodes() says so
        fake_sign(Checkpoint("gw-a", 3, records[2].hash, T0 + 7, "prune", 2, records[0].hash)),
        fake_sign(Checkpoint("gw-a", 3, records[2].hash, T0 + 8)),  # same seq again
    ]
    for cp in cps:
        store.append_checkpoint(cp)
    assert store.checkpoints("gw-a") == [cps[0], cps[2], cps[3]]
    assert store.checkpoints() == [cps[0], cps[2], cps[3], cps[1]]
    assert store.checkpoints("gw-none") == []
    assert store.nodes() == ["gw-a", "gw-z"]


def test_a_batch_that_does_not_follow_the_head_is_refused_whole(store: AuditStore) -> None:
    stored = append(store, [draft(i) for i in range(3)])
    stale = chain([draft(10), draft(11)], (2, stored[1].hash))  # seq 3 exists
    gap = chain([draft(10)], (4, stored[2].hash))  # seq 4 missing
    fork = chain([draft(10)], (3, "0" * 64))  # right seq, wrong hash
    not_first = chain([draft(10, node="gw-b")], (0, stored[0].hash))
    for batch in (stale, gap, fork, not_first):
        with pytest.raises(ChainConflictError):
            store.append_batch(batch)
    with pytest.raises(ValueError, match="not sealed"):
        store.append_batch([replace(chain([draft(10)], (3, stored[2].hash))[0], hash="")])
    broken = chain([draft(10), draft(11)], (3, stored[2].hash))
    with pytest.raises(ValueError, match="prev_hash"):
        store.append_batch([broken[0], replace(broken[1], prev_hash="x").sealed()])
    with pytest.raises(ValueError, match="expected"):
        store.append_batch([broken[1], broken[0]])
    store.append_batch([])
    assert list(store.records()) == stored
    assert store.nodes() == ["gw-a"]


def test_a_replayed_jti_names_its_index_and_nothing_of_the_batch_is_written(
    store: AuditStore,
) -> None:
    stored = append(store, [draft(0, jti="j-0"), draft(1, jti="j-1", part=1)])
    head = store.head("gw-a")
    for offender, batch in (
        (2, [draft(10), draft(11), draft(12, jti="j-0"), draft(13)]),  # stored already
        (3, [draft(10), draft(11, jti="j-9"), draft(12), draft(13, jti="j-9")]),  # in batch
        (0, [draft(10, jti="j-1", part=1)]),
    ):
        linked = chain(batch, head)
        with pytest.raises(ReplayError) as caught:
            store.append_batch(linked)
        assert caught.value.index == offender
        assert (caught.value.requester, caught.value.jti) == ("CNSS", batch[offender].jti)
        assert store.head("gw-a") == head
        assert store.query(Query(subject=batch[0].subjects[1]), 10) == ([], "")
    # Not replays: another part of a stream, another institution's jti, or no jti at all.
    fine = append(
        store,
        [
            draft(20, jti="j-1", part=2),
            draft(21, jti="j-0", requester="ANSS"),
            draft(22, jti=""),
            draft(23, jti=""),
        ],
    )
    assert list(store.records()) == stored + fine


def test_a_jti_is_used_once_across_two_replicas(db: AuditDatabase) -> None:
    """Two stores (separate connections), two nodes: the durable write is the replay
    check every replica shares."""
    replicas = [db.open(), db.open()]
    nodes = ["gw-1", "gw-2"]
    append(replicas[0], [draft(0, node="gw-1", jti="shared")])
    with pytest.raises(ReplayError):
        append(replicas[1], [draft(0, node="gw-2", jti="shared")])
    for round_ in range(20):
        jti = f"race-{round_}"
        outcomes = run_together(
            2,
            lambda i: append(replicas[i], [draft(round_, node=nodes[i], jti=jti)]),  # noqa: B023
        )
        assert sum(isinstance(o, list) for o in outcomes) == 1, outcomes
        assert sum(isinstance(o, ReplayError) for o in outcomes) == 1, outcomes
    records = list(replicas[0].records())
    assert len(records) == 21
    assert len({r.jti for r in records}) == 21
    for node in nodes:
        assert_contiguous(list(replicas[1].records(node)))


def test_an_institutions_calls_are_counted_once_each_across_nodes(store: AuditStore) -> None:
    """A daily quota's count: a call's own record (part 0) on any node, not its batches',
    nor the gateway's records of proposed actions, nor another institution's."""
    append(store, [draft(1), draft(2, part=1, jti="jti-gw-a-1"), draft(3, requester="ANSS")])
    append(store, [draft(4, node="gw-b"), draft(5, node="gw-b", requester_sub="jisr:due-process")])
    append(store, [draft(6, node="gw-b", at_us=T0 - 1)])  # before the day
    assert store.count_calls_since("CNSS", T0) == 2
    assert store.count_calls_since("ANSS", T0) == 1


def newest_first(records: list[AuditRecord]) -> list[AuditRecord]:
    return sorted(records, key=lambda r: (r.at_us, r.node, r.seq), reverse=True)


def all_pages(store: AuditStore, q: Query, size: int) -> list[list[AuditRecord]]:
    pages: list[list[AuditRecord]] = []
    token = ""
    while True:
        page, token = store.query(q, size, token)
        pages.append(page)
        if not token:
            return pages


@pytest.fixture
def varied(store: AuditStore) -> list[AuditRecord]:
    """90 records over three nodes; some share a timestamp across nodes."""
    records: list[AuditRecord] = []
    for node in ("gw-a", "gw-b", "gw-c"):
        drafts = [
            draft(
                i,
                node=node,
                at_us=T0 + (i // 2) * 1_000,  # pairs share a timestamp
                requester=("CNSS", "ANSS", "EDU")[i % 3],
                purpose=("eligibility.check", "recertification")[i % 2],
                method=(METHOD, BATCH_METHOD)[(i // 3) % 2],
                decision="deny" if i % 7 == 0 else "permit",
                trace_id="" if i % 4 == 0 else f"{i % 10:032x}",
                subjects=(f"h{i % 6}", f"p{i}") if i % 11 else (),
            )
            for i in range(30)
        ]
        records += append(store, drafts)
    return records


FILTERS: dict[str, tuple[Query, Callable[[AuditRecord], bool]]] = {
    "all": (Query(), lambda r: True),
    "subject": (Query(subject="h2"), lambda r: "h2" in r.subjects),
    "requester": (Query(requester="ANSS"), lambda r: r.requester == "ANSS"),
    "purpose": (Query(purpose="recertification"), lambda r: r.purpose == "recertification"),
    "method": (Query(method=BATCH_METHOD), lambda r: r.method == BATCH_METHOD),
    "decision": (Query(decision="deny"), lambda r: r.decision == "deny"),
    "since": (Query(since_us=T0 + 5_000), lambda r: r.at_us >= T0 + 5_000),
    "until": (Query(until_us=T0 + 5_000), lambda r: r.at_us < T0 + 5_000),
    "trace": (Query(trace_id=f"{3:032x}"), lambda r: r.trace_id == f"{3:032x}"),
    "nodes": (Query(nodes=frozenset({"gw-a", "gw-c"})), lambda r: r.node in {"gw-a", "gw-c"}),
    "combined": (
        Query(
            subject="h1",
            requester="ANSS",
            decision="permit",
            since_us=T0 + 2_000,
            until_us=T0 + 12_000,
            nodes=frozenset({"gw-b", "gw-c"}),
        ),
        lambda r: (
            "h1" in r.subjects
            and r.requester == "ANSS"
            and r.decision == "permit"
            and T0 + 2_000 <= r.at_us < T0 + 12_000
            and r.node in {"gw-b", "gw-c"}
        ),
    ),
}


@pytest.mark.parametrize("name", FILTERS)
def test_query_by_each_filter_newest_first(
    store: AuditStore, varied: list[AuditRecord], name: str
) -> None:
    q, matches = FILTERS[name]
    expected = newest_first([r for r in varied if matches(r)])
    assert 0 < len(expected) < len(varied) or name == "all"
    assert store.query(q, 1_000) == (expected, "")


def test_a_query_matching_nothing_is_one_empty_page(
    store: AuditStore, varied: list[AuditRecord]
) -> None:
    for q in (Query(subject="nobody"), Query(nodes=frozenset()), Query(requester="h2")):
        assert store.query(q, 10) == ([], "")


def test_records_of_subjects_sharing_a_subject_key_never_leak(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index holds 64-bit keys of subjects; a query re-checks the subject's text."""
    monkeypatch.setattr(audit_store, "subject_key", lambda subject: 7)  # every key collides
    records = append(store, [draft(i, subjects=(f"h{i % 3}", "shared")) for i in range(9)])
    assert store.query(Query(subject="h1"), 100) == (
        newest_first([r for r in records if "h1" in r.subjects]),
        "",
    )
    assert store.query(Query(subject="shared"), 100) == (newest_first(records), "")
    assert store.query(Query(subject="h9"), 100) == ([], "")


def test_query_pages_without_gap_or_repeat(store: AuditStore, varied: list[AuditRecord]) -> None:
    pages = all_pages(store, Query(), 7)
    assert [len(p) for p in pages] == [7] * 12 + [6]
    assert [r for p in pages for r in p] == newest_first(varied)
    subject = all_pages(store, Query(subject="h3"), 2)
    assert [r for p in subject for r in p] == newest_first(
        [r for r in varied if "h3" in r.subjects]
    )
    exact = all_pages(store, Query(requester="EDU"), 10)  # 30 matches: no empty last page
    assert [len(p) for p in exact] == [10, 10, 10]
    # Records appended after a page was read never shift the pages still to come.
    first, token = store.query(Query(), 10)
    append(store, [draft(100, node="gw-a", at_us=T0 + 10**9)])
    rest = all_pages(store, Query(), 10)
    page, _ = store.query(Query(), 10, token)
    assert page == newest_first(varied)[10:20]
    assert rest[0][0].at_us == T0 + 10**9
    assert first == newest_first(varied)[:10]


def test_query_refuses_bad_page_requests(store: AuditStore) -> None:
    for size in (0, 1_001):
        with pytest.raises(ValueError, match="page_size"):
            store.query(Query(), size)
    for token in ("%%%", "bm90IGpzb24", "WzEsMl0"):  # not base64, not JSON, not a triple
        with pytest.raises(ValueError, match="page token"):
            store.query(Query(), 10, token)
    assert store.query(Query(), 1_000) == ([], "")


def test_the_database_refuses_to_update_or_delete_records_and_checkpoints(
    db: AuditDatabase, store: AuditStore
) -> None:
    records = append(store, [draft(0)])
    store.append_checkpoint(fake_sign(Checkpoint("gw-a", 1, records[0].hash, T0)))
    for statement in (
        "UPDATE audit_record SET requester = 'EVIL'",
        "DELETE FROM audit_record",
        "UPDATE audit_checkpoint SET seq = 2",
        "DELETE FROM audit_checkpoint",
    ):
        with pytest.raises(Exception, match="append-only"):
            db.sql(statement)
    if db.backend == "postgresql":
        with pytest.raises(Exception, match="append-only"):
            db.sql("TRUNCATE audit_record")
    assert list(store.records()) == records
    assert len(store.checkpoints()) == 1


def test_prune_before_keeps_the_chain_contiguous_from_the_first_kept_record(
    db: AuditDatabase, store: AuditStore
) -> None:
    a = append(store, [draft(i) for i in range(40)])
    b = append(store, [draft(i, node="gw-b") for i in range(5)])
    cutoff = a[25].at_us
    assert store.prune_before(cutoff, "gw-a") == (25, 26, a[24].hash)
    kept = list(store.records("gw-a"))
    assert kept == a[25:]
    assert kept[0].prev_hash == a[24].hash
    assert_contiguous(kept, first_seq=26)
    assert list(store.records("gw-b")) == b  # other nodes untouched
    on_a = frozenset({"gw-a"})
    assert store.query(Query(subject=a[3].subjects[1], nodes=on_a), 10) == ([], "")
    assert store.query(Query(subject=a[30].subjects[1]), 10) == ([a[30]], "")
    for tier in ("audit_subject", "audit_subject_recent"):
        assert db.sql(f"SELECT count(*) FROM {tier} WHERE node = 'gw-a' AND seq < 26") == [(0,)]
    # Again: nothing more to delete, same answer.
    assert store.prune_before(cutoff, "gw-a") == (0, 26, a[24].hash)
    # Everything older than the cutoff: the head stays, so the chain goes on from it.
    assert store.prune_before(T0 + 10**12, "gw-a") == (14, 40, a[38].hash)
    assert list(store.records("gw-a")) == [a[39]]
    assert store.head("gw-a") == (40, a[39].hash)
    more = append(store, [draft(50), draft(51)])
    assert_contiguous([a[39], *more], first_seq=40)
    assert store.prune_before(T0, "gw-none") == (0, 0, GENESIS)
    # The append-only guard is back on after pruning.
    with pytest.raises(Exception, match="append-only"):
        db.sql("DELETE FROM audit_record")


def test_prune_before_deletes_a_long_chain_in_chunks(store: AuditStore) -> None:
    records: list[AuditRecord] = []
    for start in range(0, 12_000, 2_000):
        records += append(store, [draft(i, subjects=()) for i in range(start, start + 2_000)])
    assert store.prune_before(records[11_000].at_us, "gw-a") == (
        11_000,
        11_001,
        records[10_999].hash,
    )
    assert list(store.records()) == records[11_000:]


def test_migrations_are_idempotent_and_share_a_database_with_the_consent_store(
    db: AuditDatabase,
) -> None:
    migrations = SQLITE if db.backend == "sqlite" else POSTGRES
    records = append(db.open(), [draft(0)])
    consent = open_store(db.url, db.data_dir)  # its own tables and migrations table
    consent.close()
    db.close()
    reopened = db.open()
    versions = db.sql(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    assert [v for (v,) in versions] == [m.version for m in migrations]
    assert list(reopened.records()) == records


def test_processes_opening_a_new_database_together_migrate_it_once(db: AuditDatabase) -> None:
    opened = run_together(4, lambda _: db.open())
    assert not [o for o in opened if isinstance(o, Exception)], opened
    versions = db.sql(f"SELECT version FROM {MIGRATIONS_TABLE}")
    assert len(versions) == len(SQLITE if db.backend == "sqlite" else POSTGRES)


def test_a_database_with_a_newer_schema_is_refused(db: AuditDatabase) -> None:
    db.open()
    db.close()
    db.sql(f"INSERT INTO {MIGRATIONS_TABLE} (version, applied_at) VALUES (999, '2100-01-01')")
    with pytest.raises(SchemaTooNewError, match=r"audit database .* schema version 999"):
        db.open()


def test_an_unsupported_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported audit database URL scheme: 'mysql'"):
        open_audit_store("mysql://db/jisr", tmp_path)


# The writer.


class Flaky:
    """An AuditStore in front of a real one, failing (or stalling) on command: a fake at the
    store boundary, for the writer's handling of store failures."""

    def __init__(self, inner: AuditStore) -> None:
        self.inner = inner
        self.fail = False  # append_batch raises `error`
        self.fail_head = False  # head raises too (the database is down)
        self.error: Exception = OSError("disk on fire")
        self.head_calls = 0
        self.commit_then_fail = False  # stored, but the acknowledgement is lost
        self.gate = threading.Event()  # append_batch waits for it
        self.gate.set()
        self.entered = threading.Event()  # set when an append_batch starts
        self.batches: list[int] = []  # sizes of the batches attempted

    def append_batch(self, records: Sequence[AuditRecord]) -> None:
        self.batches.append(len(records))
        self.entered.set()
        self.gate.wait()
        if self.fail:
            raise self.error
        self.inner.append_batch(records)
        if self.commit_then_fail:
            raise OSError("connection lost before the commit was acknowledged")

    def append_checkpoint(self, cp: Checkpoint) -> None:
        if self.fail:
            raise OSError("disk on fire")
        self.inner.append_checkpoint(cp)

    def head(self, node: str) -> tuple[int, str]:
        self.head_calls += 1
        if self.fail_head:
            raise OSError("database down")
        return self.inner.head(node)

    def records(
        self, node: str | None = None, after_seq: int = 0, batch: int = 10_000
    ) -> Iterator[AuditRecord]:
        return self.inner.records(node, after_seq, batch)

    def record_rows(self, node: str) -> Iterator[tuple[Any, ...]]:
        return self.inner.record_rows(node)

    def checkpoints(self, node: str | None = None) -> list[Checkpoint]:
        return self.inner.checkpoints(node)

    def tree_start(self, node: str) -> int:
        return self.inner.tree_start(node)

    def covering(self, node: str, seq: int) -> Checkpoint | None:
        return self.inner.covering(node, seq)

    def count_calls_since(self, requester: str, at_us: int) -> int:
        return self.inner.count_calls_since(requester, at_us)

    def nodes(self) -> list[str]:
        return self.inner.nodes()

    def query(
        self, q: Query, page_size: int, page_token: str = ""
    ) -> tuple[list[AuditRecord], str]:
        return self.inner.query(q, page_size, page_token)

    def prune_before(self, at_us: int, node: str) -> tuple[int, int, str]:
        return self.inner.prune_before(at_us, node)

    def close(self) -> None:
        self.inner.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_writer_commits_8_threads_x_200_appends_as_one_contiguous_chain(
    store: AuditStore,
) -> None:
    counting = Flaky(store)
    writer = AuditWriter(counting, "gw-a", fake_sign, checkpoint_every=100)
    try:

        def two_hundred(t: int) -> list[AuditRecord]:
            return [
                writer.append(draft(t * 1_000 + k, node="", jti=f"t{t}-{k}")) for k in range(200)
            ]

        results = run_together(8, two_hundred)
    finally:
        counting.gate.set()
        writer.close()
    returned = [r for out in results if isinstance(out, list) for r in out]
    assert len(returned) == 1_600, [o for o in results if not isinstance(o, list)]
    stored = list(store.records("gw-a"))
    assert_contiguous(stored)
    assert sorted(returned, key=lambda r: r.seq) == stored  # what callers got is what is stored
    assert all(r.node == "gw-a" for r in stored)
    for out in results:  # each thread's records are in its own order
        assert isinstance(out, list)
        assert [r.seq for r in out] == sorted(r.seq for r in out)
    cps = store.checkpoints("gw-a")
    assert [(cp.seq, cp.hash) for cp in cps] == [
        (s, stored[s - 1].hash) for s in range(100, 1_601, 100)
    ]
    assert all(cp.signature == f"fake.gw-a.{cp.seq}" for cp in cps)
    assert max(counting.batches) <= 100
    assert len(counting.batches) < 1_600  # commits were shared
    assert writer.queue_depth == 0


def test_a_failing_store_fails_every_waiting_caller_and_the_chain_resumes_without_a_gap(
    store: AuditStore,
) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign, checkpoint_every=10_000)
    try:
        before = [writer.append(draft(i)) for i in range(5)]
        flaky.fail = flaky.fail_head = True
        flaky.gate.clear()
        flaky.entered.clear()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(writer.append, draft(100 + t)) for t in range(8)]
            flaky.entered.wait(5)
            wait_for(
                lambda: writer.queue_depth + flaky.batches[-1] == 8,
                "the 8 callers in the stalled batch or queued behind it",
            )
            flaky.gate.set()
            outcomes = [f.exception(timeout=10) for f in futures]
        assert all(isinstance(o, AuditUnavailable) for o in outcomes), outcomes
        assert store.head("gw-a") == (5, before[-1].hash)
        assert writer.head is None  # unknown while the database is down
        with pytest.raises(AuditUnavailable):
            writer.append(draft(200))  # the head cannot be read either
        flaky.fail = flaky.fail_head = False
        wait_for(lambda: writer.available, "the writer's probe to find the store back")
        after = [writer.append(draft(300 + i)) for i in range(5)]
    finally:
        flaky.gate.set()
        writer.close()
    assert [r.seq for r in after] == [6, 7, 8, 9, 10]
    assert_contiguous(list(store.records()))
    assert [r.rh for r in store.records()] == [r.rh for r in before + after]


def test_after_a_lost_acknowledgement_the_chain_goes_on_from_what_was_stored(
    store: AuditStore,
) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign)
    try:
        writer.append(draft(0))
        flaky.commit_then_fail = True
        with pytest.raises(AuditUnavailable):
            writer.append(draft(1))  # durable, but the caller cannot know: fail closed
        flaky.commit_then_fail = False
        assert writer.append(draft(2)).seq == 3
    finally:
        flaky.gate.set()
        writer.close()
    stored = list(store.records())
    assert [r.rh for r in stored] == ["rh-0", "rh-1", "rh-2"]
    assert_contiguous(stored)


def test_a_replay_fails_only_its_caller_and_the_rest_of_the_batch_is_relinked(
    store: AuditStore,
) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign)
    try:
        writer.append(draft(0, jti="used"))
        flaky.gate.clear()
        flaky.entered.clear()
        drafts = [draft(10 + t, jti="used" if t in (2, 5) else f"fresh-{t}") for t in range(8)]
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(writer.append, drafts[0])]
            flaky.entered.wait(5)  # the first batch is stalled: the others queue up
            futures += [pool.submit(writer.append, d) for d in drafts[1:]]
            wait_for(lambda: writer.queue_depth == 7, "7 callers queued")
            flaky.gate.set()
            outcomes = [f.exception(timeout=10) or f.result() for f in futures]
    finally:
        flaky.gate.set()
        writer.close()
    assert [type(o).__name__ for o in outcomes] == [
        "AuditRecord",
        "AuditRecord",
        "ReplayError",
        "AuditRecord",
        "AuditRecord",
        "ReplayError",
        "AuditRecord",
        "AuditRecord",
    ]
    replay = outcomes[2]
    assert isinstance(replay, ReplayError)
    assert (replay.requester, replay.jti, replay.part) == ("CNSS", "used", 0)
    assert flaky.batches[:2] == [1, 1] and flaky.batches[2:5] == [7, 6, 5]  # noqa: PT018
    stored = list(store.records())
    assert_contiguous(stored)
    assert [r.rh for r in stored] == ["rh-0"] + [
        f"rh-{10 + t}" for t in range(8) if t not in (2, 5)
    ]


def test_a_stalled_store_times_callers_out_as_unavailable(store: AuditStore) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign)
    try:
        flaky.gate.clear()
        started = time.monotonic()
        with pytest.raises(AuditUnavailable, match=r"within 0\.2 s"):
            writer.append(draft(0), timeout=0.2)
        assert time.monotonic() - started < 2
        with pytest.raises(AuditUnavailable):  # queued behind it: dropped, never stored
            writer.append(draft(1), timeout=0.2)
        flaky.gate.set()
        assert writer.append(draft(2)).seq == 2  # the stalled one committed late
    finally:
        flaky.gate.set()
        writer.close()
    assert [r.rh for r in store.records()] == ["rh-0", "rh-2"]


def test_writer_checkpoints_on_time_and_on_close(store: AuditStore) -> None:
    writer = AuditWriter(store, "gw-a", fake_sign, checkpoint_seconds=0.2)
    first = writer.append(draft(0))
    wait_for(lambda: len(store.checkpoints()) == 1, "a timed checkpoint", timeout=5)
    time.sleep(0.5)  # no records since: no further checkpoint
    assert [(cp.seq, cp.hash) for cp in store.checkpoints()] == [(1, first.hash)]
    last = writer.append(draft(1))
    writer.close()
    cps = store.checkpoints("gw-a")
    assert [(cp.seq, cp.hash, cp.kind) for cp in cps][-1] == (2, last.hash, "periodic")
    assert cps[-1].signature == "fake.gw-a.2"
    with pytest.raises(AuditUnavailable, match="closed"):
        writer.append(draft(2))
    writer.close()  # twice is fine
    assert len(store.checkpoints()) == len(cps)


def test_close_writes_a_final_checkpoint_and_a_new_writer_continues_the_chain(
    store: AuditStore,
) -> None:
    writer = AuditWriter(store, "gw-a", fake_sign)
    done = [writer.append(draft(i)) for i in range(3)]
    assert store.checkpoints() == []
    writer.close()
    tree = merkle.root([r.hash for r in done])
    at_us = store.checkpoints()[0].at_us
    assert store.checkpoints() == [
        fake_sign(Checkpoint("gw-a", 3, done[-1].hash, at_us, root=tree, root_first=1))
    ]
    again = AuditWriter(store, "gw-a", fake_sign)
    more = again.append(draft(3))
    again.close()
    assert (more.seq, more.prev_hash) == (4, done[-1].hash)
    assert [(cp.seq, cp.root_first) for cp in store.checkpoints()] == [(3, 1), (4, 4)]
    assert store.checkpoints()[1].root == merkle.root([more.hash])
    idle = AuditWriter(store, "gw-b", fake_sign)  # an empty chain: nothing to sign
    idle.close()
    assert store.nodes() == ["gw-a"]


def test_the_checkpoint_covering_a_record_is_the_tree_that_holds_it(store: AuditStore) -> None:
    records = append(store, [draft(i) for i in range(6)])
    old = fake_sign(Checkpoint("gw-a", 2, records[1].hash, T0 + 1))  # before trees
    trees = [
        fake_sign(Checkpoint("gw-a", seq, records[seq - 1].hash, T0 + seq, root=f"r{seq}",
                             root_first=first))
        for first, seq in ((3, 4), (5, 5))
    ]  # fmt: skip
    for cp in (old, *trees):
        store.append_checkpoint(cp)
    found = [store.covering("gw-a", seq) for seq in range(1, 8)]
    assert found == [None, None, trees[0], trees[0], trees[1], None, None]
    assert store.covering("gw-b", 3) is None


def test_a_tree_longer_than_the_writer_holds_is_signed_without_a_root(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints failed for so long that their tree would span more than MAX_TREE
    records: the checkpoint seals the chain's head, and the next tree starts after it."""
    monkeypatch.setattr("gateway.audit.writer.MAX_TREE", 2)
    writer = AuditWriter(store, "gw-a", fake_sign, checkpoint_every=10_000)
    for i in range(3):
        writer.append(draft(i))
    writer.close()
    again = AuditWriter(store, "gw-a", fake_sign)
    more = again.append(draft(3))
    again.close()
    sealed = [(cp.seq, cp.root_first, bool(cp.root)) for cp in store.checkpoints()]
    assert sealed == [(3, 0, False), (4, 4, True)]
    assert store.checkpoints()[1].root == merkle.root([more.hash])


def test_two_writers_given_one_node_name_never_fork_the_chain(db: AuditDatabase) -> None:
    one = AuditWriter(db.open(), "gw-a", fake_sign)
    two = AuditWriter(db.open(), "gw-a", fake_sign)  # a misconfiguration
    try:
        one.append(draft(0))
        with pytest.raises(AuditUnavailable):
            two.append(draft(1))  # its head is stale: the store refuses, it re-reads
        assert two.append(draft(2)).seq == 2
    finally:
        one.close()
        two.close()
    assert_contiguous(list(db.stores[0].records()))


# The writer while the store is down: a circuit breaker, and a bounded log.


def take_down(flaky: Flaky, writer: AuditWriter) -> None:
    """The store goes down (writes and reads fail) and the writer learns it from an append."""
    flaky.fail = flaky.fail_head = True
    with pytest.raises(AuditUnavailable):
        writer.append(draft(10_000))
    assert not writer.available


def test_while_the_store_is_down_appends_fail_at_once_and_leave_it_alone(
    store: AuditStore,
) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign, probe_seconds=0.5)
    try:
        writer.append(draft(0))
        take_down(flaky, writer)
        batches, heads = len(flaky.batches), flaky.head_calls
        started = time.monotonic()
        slowest = 0.0
        for i in range(300):
            t = time.monotonic()
            with pytest.raises(AuditUnavailable, match="failing fast"):
                writer.append(draft(1 + i))
            slowest = max(slowest, time.monotonic() - t)
        elapsed = time.monotonic() - started
    finally:
        flaky.fail = flaky.fail_head = False
        writer.close()
    assert slowest < 0.5, f"slowest refusal took {slowest:.3f} s"
    assert len(flaky.batches) == batches  # no append reached the store
    # only the writer's probe touched it: one read per probe interval (0.5 s)
    assert flaky.head_calls - heads <= elapsed / 0.5 + 2, (flaky.head_calls - heads, elapsed)


def test_while_the_store_is_down_the_writer_probes_it_once_per_interval(
    store: AuditStore,
) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign, probe_seconds=0.3)
    try:
        take_down(flaky, writer)
        heads = flaky.head_calls
        time.sleep(1.0)  # no appends at all: the probes are the writer's own
        probes = flaky.head_calls - heads
    finally:
        flaky.fail = flaky.fail_head = False
        writer.close()
    assert 2 <= probes <= 5, probes  # ~3 in 1 s, with slack for a slow machine


def test_the_first_probe_that_finds_the_store_back_reopens_appends_on_its_head(
    store: AuditStore,
) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign, probe_seconds=0.2)
    try:
        first = writer.append(draft(0))
        flaky.commit_then_fail = True  # the outage begins with a lost acknowledgement
        flaky.fail_head = True
        with pytest.raises(AuditUnavailable):
            writer.append(draft(1))
        assert not writer.available
        flaky.commit_then_fail = flaky.fail_head = False
        back = time.monotonic()
        wait_for(lambda: writer.available, "the probe to find the store back", timeout=5)
        reopened = time.monotonic() - back
        after = writer.append(draft(2))
    finally:
        flaky.gate.set()
        writer.close()
    assert reopened < 2, f"appends reopened {reopened:.2f} s after the store came back"
    assert (after.seq, first.seq) == (3, 1)  # seq 2 was durable: the probe read it back
    stored = list(store.records())
    assert [r.rh for r in stored] == ["rh-0", "rh-1", "rh-2"]
    assert_contiguous(stored)


@pytest.fixture
def audit_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Any:
    """caplog for the writer's logger (propagating, as gateway/base/logs.py leaves it)."""
    monkeypatch.setattr(logging.getLogger("jisr"), "propagate", True)
    caplog.set_level(logging.INFO, logger="jisr.audit")
    return caplog


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "jisr.audit" and r.levelno == level]


def test_a_store_failing_every_append_logs_at_most_two_error_lines(
    store: AuditStore, audit_log: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(store)
    flaky.fail = True  # writes fail, reads work: a full disk
    writer = AuditWriter(flaky, "gw-a", fake_sign)
    try:
        for i in range(300):
            with pytest.raises(AuditUnavailable):
                writer.append(draft(i))
    finally:
        flaky.fail = False
        writer.close()
    assert len(flaky.batches) == 300  # each one was tried (the head could be read)
    errors = lines(audit_log, logging.ERROR)
    assert 1 <= len(errors) <= 2, errors
    assert "audit store failed, 1 append(s) failed: OSError: disk on fire" in errors[0]


def test_a_summary_line_counts_the_appends_failed_since_the_previous_line(
    store: AuditStore, audit_log: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign, probe_seconds=30, failure_log_seconds=0.5)
    try:
        take_down(flaky, writer)  # 1 failed, logged
        for i in range(4):  # refused at once: counted all the same
            with pytest.raises(AuditUnavailable):
                writer.append(draft(i))
        time.sleep(0.6)
        with pytest.raises(AuditUnavailable):
            writer.append(draft(4))  # the interval is over: a summary of 5
    finally:
        flaky.fail = flaky.fail_head = False
        writer.close()
    errors = lines(audit_log, logging.ERROR)
    assert len(errors) == 2, errors
    assert "5 more append(s) failed in the last 0." in errors[1]
    assert "OSError: database down" in errors[1]  # the last error seen (reading the head)


def test_the_store_working_again_is_logged_once_as_a_warning(
    store: AuditStore, audit_log: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(store)
    writer = AuditWriter(flaky, "gw-a", fake_sign, probe_seconds=0.1)
    try:
        take_down(flaky, writer)
        for i in range(3):
            with pytest.raises(AuditUnavailable):
                writer.append(draft(i))
        flaky.fail = flaky.fail_head = False
        wait_for(lambda: writer.available, "the store to come back")
        for i in range(3):
            writer.append(draft(10 + i))
    finally:
        writer.close()
    warnings = lines(audit_log, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "audit store works again after" in warnings[0]
    assert "4 append(s) failed meanwhile" in warnings[0]


def test_store_failure_log_lines_quote_no_record_content(
    store: AuditStore, audit_log: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(store)
    record = draft(7)
    # What PostgreSQL says of a refused row: its DETAIL quotes the row.
    flaky.error = RuntimeError(
        'new row for relation "audit_record" violates check constraint "x"\n'
        f"DETAIL:  Failing row contains ({record.requester_sub}, {record.subjects[0]})."
    )
    flaky.fail = True
    writer = AuditWriter(flaky, "gw-a", fake_sign, failure_log_seconds=0.1)
    try:
        for _ in range(3):
            with pytest.raises(AuditUnavailable):
                writer.append(record)
            time.sleep(0.15)  # a summary line each time
    finally:
        flaky.fail = False
        writer.close()
    assert len(lines(audit_log, logging.ERROR)) >= 2
    text = audit_log.text
    assert "violates check constraint" in text
    for secret in (*record.subjects, record.requester_sub, record.trace_id, "Failing row"):
        assert secret not in text


def test_a_subject_is_found_in_both_tiers_of_its_index_before_and_after_a_move(
    db: AuditDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New index rows go to the recent tier, moved into the large one every MERGE_ROWS
    rows (migration 4): a search finds a subject's records wherever its rows are."""
    for module in (store_sqlite, store_postgres):
        monkeypatch.setattr(module, "MERGE_ROWS", 12)
    monkeypatch.setattr(store_sqlite, "MERGE_RANGES", 1)  # the whole tier at once
    store = db.open()
    household = f"h{1:063x}"  # in every fifth draft
    first = append(store, [draft(i) for i in range(5)])  # 10 rows: not moved yet
    assert db.sql("SELECT count(*) FROM audit_subject_recent") == [(10,)]
    assert store.query(Query(subject=household), 10) == ([first[1]], "")
    second = append(store, [draft(i) for i in range(5, 10)])  # 20 rows: moved
    assert db.sql("SELECT count(*) FROM audit_subject_recent") == [(0,)]
    assert db.sql("SELECT count(*) FROM audit_subject") == [(20,)]
    third = append(store, [draft(i) for i in range(10, 12)])  # 4 more in the recent tier
    found, _ = store.query(Query(subject=household), 10)
    assert found == [third[1], second[1], first[1]]  # newest first, from both tiers


def test_on_sqlite_a_move_takes_a_range_of_keys_per_append_and_searches_find_all_throughout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "MERGE_ROWS", 12)
    monkeypatch.setattr(store_sqlite, "MERGE_RANGES", 2)
    count = "SELECT count(*) FROM {} WHERE subject_key {} ?"
    with audit_database("sqlite", tmp_path) as db:
        store = db.open()
        records = append(store, [draft(i) for i in range(10)])  # 20 rows: the move starts
        _, high = store_sqlite.key_ranges(2)[0]
        assert db.sql(count.format("audit_subject_recent", "<="), (high,)) == [(0,)]
        assert db.sql(count.format("audit_subject", ">"), (high,)) == [(0,)]
        assert db.sql(count.format("audit_subject", "<="), (high,))[0][0] > 0
        records += append(store, [draft(10)])  # the second range: the move ends
        assert db.sql(count.format("audit_subject_recent", ">"), (high,)) == [(0,)]
        tiers = [
            db.sql(f"SELECT count(*) FROM {t}")[0][0]
            for t in ("audit_subject", "audit_subject_recent")
        ]
        assert sum(tiers) == 22
        for record in records:
            for subject in record.subjects:
                assert record in store.query(Query(subject=subject), 20)[0]


def test_on_sqlite_a_move_that_fails_is_rolled_back_alone_and_the_records_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audit_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_sqlite, "MERGE_ROWS", 12)
    broken = ("INSERT INTO audit_subject SELECT 1, 2, ?, ? FROM no_such_table",)
    monkeypatch.setattr(store_sqlite, "_MERGE", broken)
    with audit_database("sqlite", tmp_path) as db:
        store = db.open()
        records = append(store, [draft(i) for i in range(10)])  # 20 rows: a move starts
        assert [r.seq for r in store.records("gw-a")] == [r.seq for r in records]
        assert db.sql("SELECT count(*) FROM audit_subject_recent") == [(20,)]
        assert db.sql("SELECT count(*) FROM audit_subject") == [(0,)]
    warnings = lines(audit_log, logging.WARNING)
    assert any("recent tier was not moved" in line for line in warnings)


def test_a_prune_after_a_move_leaves_no_index_row_in_either_tier(
    db: AuditDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in (store_sqlite, store_postgres):
        monkeypatch.setattr(module, "MERGE_ROWS", 12)
    store = db.open()
    records = append(store, [draft(i) for i in range(10)])  # 20 rows: moved
    records += append(store, [draft(i) for i in range(10, 12)])  # 4 rows: recent
    assert store.prune_before(records[11].at_us, "gw-a") == (11, 12, records[10].hash)
    for tier in ("audit_subject", "audit_subject_recent"):
        assert db.sql(f"SELECT count(*) FROM {tier} WHERE seq < 12") == [(0,)]
    assert store.query(Query(subject=records[11].subjects[1]), 10) == ([records[11]], "")


def test_the_writer_runs_its_start_hook_once_on_its_own_thread(
    store: AuditStore,
) -> None:
    seen: list[tuple[str, int]] = []
    writer = AuditWriter(
        store,
        "gw-a",
        fake_sign,
        thread_started=lambda: seen.append((threading.current_thread().name, len(seen))),
    )
    try:
        writer.append(draft(0))
    finally:
        writer.close()
    assert seen == [("jisr-audit-writer-gw-a", 0)]
