"""The audit store's index for searches by decision (migration 2, both backends): made on a
new trail and on one migrated from version 1 (its records kept), and the one SQLite's
planner picks for a decision + reason search (bench/audit_search.py measured why)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, nullcontext
from pathlib import Path

import psycopg
import pytest

from gateway.audit.migrations import MIGRATIONS_TABLE, POSTGRES, SQLITE
from gateway.audit.record import GENESIS, AuditRecord, link
from gateway.audit.store import Query, open_audit_store
from gateway.audit.store_common import SQLITE_HAS_SUBJECT, query_sql
from gateway.storage.migrations import VersionLine
from gateway.storage.postgres import StorePool
from gateway.storage.sqlite import SQLiteFile
from tests.support import databases

INDEX = "audit_record_by_decision"
T0 = 1_750_000_000_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str | None, Path]]:
    """(the PostgreSQL schema's URL, or None for SQLite; the state directory)."""
    schema = databases.postgres_schema() if request.param == "postgresql" else nullcontext()
    with schema as url:
        yield url, tmp_path


def _index(url: str | None, state_dir: Path) -> str:
    """The index's definition ("" if it does not exist)."""
    if url is None:
        with closing(sqlite3.connect(state_dir / "audit.sqlite")) as conn:
            row = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (INDEX,)
            ).fetchone()
    else:
        with psycopg.connect(url) as pg:
            row = pg.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                " AND tablename = 'audit_record' AND indexname = %s",
                (INDEX,),
            ).fetchone()
    return str(row[0]) if row else ""


def _versions(url: str | None, state_dir: Path) -> list[int]:
    query = f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version"
    if url is None:
        with closing(sqlite3.connect(state_dir / "audit.sqlite")) as conn:
            return [int(v) for (v,) in conn.execute(query)]
    with psycopg.connect(url) as pg:
        return [int(v) for (v,) in pg.execute(query)]


def _migrate_to_version_1(url: str | None, state_dir: Path) -> None:
    """A trail as the Jisr before migration 2 made it."""
    if url is None:
        db = SQLiteFile(state_dir / "audit.sqlite", what="audit store")
        try:
            db.migrate(db.writer("FULL"), VersionLine("audit", MIGRATIONS_TABLE, SQLITE[:1]))
        finally:
            db.close()
        return
    pool = StorePool(url, name="jisr-audit-test", what="audit store")
    try:
        pool.migrate(VersionLine("audit", MIGRATIONS_TABLE, POSTGRES[:1]), docs="")
    finally:
        pool.close()


def _record(seq: int, prev_hash: str, decision: str) -> AuditRecord:
    draft = AuditRecord(
        node="gw-a",
        seq=0,
        at_us=T0 + seq,
        trace_id="",
        requester="CNSS",
        requester_sub="agent",
        method="/jisr.v1.RegistryExchange/VerifyEligibility",
        purpose="AMO_ENROLMENT",
        basis="" if decision == "deny" else "Law 65-00",
        subjects=(f"{seq:064x}",),
        fields=(),
        decision=decision,
        reason="PURPOSE_NOT_ALLOWED" if decision == "deny" else "",
        rh=f"rh{seq}",
        sh="",
        jti=f"jti{seq}",
        part=0,
        latency_us=100,
    )
    return link(seq - 1, prev_hash, draft)


def test_a_new_trail_has_the_index(where: tuple[str | None, Path]) -> None:
    url, state_dir = where
    open_audit_store(url, state_dir).close()
    assert "(decision, at_us, node, seq)" in _index(url, state_dir)
    assert _versions(url, state_dir) == [1, 2, 3, 4]


def test_a_version_1_trail_gets_the_index_and_keeps_its_records(
    where: tuple[str | None, Path],
) -> None:
    url, state_dir = where
    _migrate_to_version_1(url, state_dir)
    assert _index(url, state_dir) == ""
    records: list[AuditRecord] = []
    with closing(open_audit_store(url, state_dir)) as store:  # migrates to the latest version
        prev = GENESIS
        for seq in range(1, 5):
            records.append(_record(seq, prev, "deny" if seq % 2 else "permit"))
            prev = records[-1].hash
        store.append_batch(records)
    assert "(decision, at_us, node, seq)" in _index(url, state_dir)
    assert _versions(url, state_dir) == [1, 2, 3, 4]
    with closing(open_audit_store(url, state_dir, read_only=True)) as reader:
        denied, _ = reader.query(Query(decision="deny", reason="PURPOSE_NOT_ALLOWED"), 10)
    assert [r.seq for r in denied] == [3, 1]


def test_sqlite_searches_refusals_through_the_index(tmp_path: Path) -> None:
    open_audit_store(None, tmp_path).close()
    sql, params = query_sql(
        Query(decision="deny", reason="CONSENT_EXPIRED"), None, 101, SQLITE_HAS_SUBJECT
    )
    with closing(sqlite3.connect(tmp_path / "audit.sqlite")) as conn:
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert f"USING INDEX {INDEX} (decision=?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # already newest first: no sort
