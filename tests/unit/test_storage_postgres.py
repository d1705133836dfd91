"""The PostgreSQL plumbing of the stores (gateway/storage/postgres.py): the pool's start,
the migration runner under its advisory lock, and the lock keys replicas must agree on.

Tests needing a server get a fresh schema each and run as tests/support/databases.py
says (always with CI=true; elsewhere skipped, saying why, when no server answers). The
pool's behaviour through an outage is tests/integration/test_store_outage.py's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from gateway.storage.migrations import Migration, SchemaTooNewError, VersionLine
from gateway.storage.postgres import StorePool, describe
from tests.support import databases

TABLE = "unit_schema_migrations"
V1 = Migration(1, "a table", ("CREATE TABLE item (id integer PRIMARY KEY, name text)",))
V2 = Migration(2, "its first row", ("INSERT INTO item (id, name) VALUES (1, 'first')",))
V3 = Migration(
    3,
    "a copy of it",
    ("CREATE TABLE item_copy AS SELECT id, name FROM item",),
)
LINE = VersionLine("unit", TABLE, (V1, V2, V3))
DOCS = "docs/unit-storage.md"


@pytest.fixture
def url() -> Iterator[str]:
    with databases.postgres_schema() as schema_url:
        yield schema_url


@pytest.fixture
def pools(url: str) -> Iterator[Callable[[], StorePool]]:
    """Opens pools on the test's schema (each as one replica would), closed afterwards."""
    opened: list[StorePool] = []

    def open_pool() -> StorePool:
        pool = StorePool(url, name="jisr-unit", what="unit store", max_size=2)
        opened.append(pool)
        return pool

    yield open_pool
    for pool in opened:
        pool.close()


def sql(url: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def applied(url: str) -> list[object]:
    return [v for (v,) in sql(url, f"SELECT version FROM {TABLE} ORDER BY version")]


def schema_of(url: str) -> str:
    return str(sql(url, "SELECT current_schema()")[0][0])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_describe_names_the_server_never_the_password() -> None:
    assert describe("postgresql://jisr:s3cret@db.example:6432/jisr") == "db.example:6432/jisr"
    assert describe("postgresql:///jisr") == "localhost:5432/jisr"
    assert describe("postgresql://jisr:s3cret@[::1") == "<unparsable PostgreSQL URL>"


def test_a_pool_that_reaches_no_server_fails_at_start() -> None:
    with pytest.raises(ConnectionError) as failed:
        StorePool(
            "postgresql://jisr:s3cret@127.0.0.1:1/none",
            name="jisr-unit",
            what="unit store",
            open_timeout=0.2,
        )
    assert str(failed.value) == (
        "unit store: no PostgreSQL answered at 127.0.0.1:1/none within 0.2 s"
    )


def test_pool_connections_autocommit(pools: Callable[[], StorePool]) -> None:
    with pools().connection() as conn:
        assert conn.autocommit


def test_a_new_schema_gets_every_migration_in_order(
    url: str, pools: Callable[[], StorePool]
) -> None:
    pools().migrate(LINE, docs=DOCS)
    assert applied(url) == [1, 2, 3]
    assert sql(url, "SELECT id, name FROM item_copy") == [(1, "first")]
    assert sql(url, f"SELECT count(*) FROM {TABLE} WHERE applied_at <= now()") == [(3,)]


def test_migrating_again_changes_nothing(url: str, pools: Callable[[], StorePool]) -> None:
    pool = pools()
    pool.migrate(LINE, docs=DOCS)
    pool.migrate(LINE, docs=DOCS)
    assert applied(url) == [1, 2, 3]
    assert sql(url, "SELECT count(*) FROM item") == [(1,)]


def test_an_older_schema_gets_only_the_versions_it_lacks(
    url: str, pools: Callable[[], StorePool]
) -> None:
    pool = pools()
    pool.migrate(VersionLine("unit", TABLE, (V1,)), docs=DOCS)
    assert applied(url) == [1]
    pool.migrate(LINE, docs=DOCS)
    assert applied(url) == [1, 2, 3]


def test_a_failing_migration_keeps_the_versions_before_it(
    url: str, pools: Callable[[], StorePool]
) -> None:
    broken = Migration(
        2, "half applied", ("INSERT INTO item (id) VALUES (7)", "INSERT INTO nowhere VALUES (1)")
    )
    with pytest.raises(psycopg.errors.UndefinedTable, match="nowhere"):
        pools().migrate(VersionLine("unit", TABLE, (V1, broken)), docs=DOCS)
    assert applied(url) == [1]
    assert sql(url, "SELECT count(*) FROM item") == [(0,)]


def test_a_schema_newer_than_the_code_is_refused(url: str, pools: Callable[[], StorePool]) -> None:
    pool = pools()
    pool.migrate(LINE, docs=DOCS)
    with pytest.raises(SchemaTooNewError) as refused:
        pool.migrate(VersionLine("unit", TABLE, (V1, V2)), docs=DOCS)
    assert str(refused.value) == (
        f"unit database {describe(url)} schema {schema_of(url)} is at schema version 3, but "
        "this Jisr knows versions up to 2: run a Jisr at least as new as the one that "
        "migrated it"
    )


def test_a_search_path_naming_no_schema_is_refused_with_where_to_read() -> None:
    missing = databases.with_schema(databases.require_postgres(), "jisr_test_no_such_schema")
    pool = StorePool(missing, name="jisr-unit", what="unit store")
    try:
        with pytest.raises(ValueError, match="names no existing schema") as refused:
            pool.migrate(LINE, docs=DOCS)
        assert str(refused.value) == (
            f"unit store: the search_path at {describe(missing)} names no existing schema; "
            f"create it first (see {DOCS})"
        )
        assert pool.applied_version(LINE) == (f"{describe(missing)} schema (none)", None)
    finally:
        pool.close()


def test_the_applied_version_needs_no_migration(url: str, pools: Callable[[], StorePool]) -> None:
    pool = pools()
    where = f"{describe(url)} schema {schema_of(url)}"
    assert pool.applied_version(LINE) == (where, None)
    pool.migrate(VersionLine("unit", TABLE, (V1, V2)), docs=DOCS)
    assert pool.applied_version(LINE) == (where, 2)


def test_replicas_migrating_together_apply_each_version_once(
    url: str, pools: Callable[[], StorePool]
) -> None:
    replicas = [pools() for _ in range(3)]
    with ThreadPoolExecutor(len(replicas)) as run:
        list(run.map(lambda pool: pool.migrate(LINE, docs=DOCS), replicas))
    assert applied(url) == [1, 2, 3]
    assert sql(url, "SELECT count(*) FROM item") == [(1,)]


@pytest.mark.parametrize("purpose", ["jisr.consent.append.", "jisr.audit.migrate."])
def test_lock_keys_are_those_every_jisr_version_computes(
    url: str, pools: Callable[[], StorePool], purpose: str
) -> None:
    """Replicas of different versions share a database during an upgrade: the key must
    stay what the SQL literal gave before the storage layer existed."""
    expected = sql(url, f"SELECT hashtextextended('{purpose}' || current_schema(), 0)")
    assert pools().lock_key(purpose) == expected[0][0]


def test_migration_waits_on_the_lock_earlier_versions_take(
    url: str, pools: Callable[[], StorePool]
) -> None:
    """A replica of an earlier Jisr holding the migration lock keeps this one waiting."""
    pool = pools()
    with psycopg.connect(url, autocommit=True) as holder, holder.transaction():
        holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('jisr.unit.migrate.' "
            "|| current_schema(), 0))"
        )
        run = ThreadPoolExecutor(1)
        waiting = run.submit(pool.migrate, LINE, docs=DOCS)

        def blocked_on_our_lock() -> bool:
            row = holder.execute(
                """SELECT count(*) FROM pg_locks AS w JOIN pg_locks AS h
                    ON (w.database, w.classid, w.objid, w.objsubid)
                     = (h.database, h.classid, h.objid, h.objsubid)
                WHERE w.locktype = 'advisory' AND h.locktype = 'advisory'
                  AND NOT w.granted AND h.granted AND h.pid = pg_backend_pid()"""
            ).fetchone()
            return row is not None and row[0] == 1

        wait_for(blocked_on_our_lock, "the migration to wait on the held lock")
        assert not waiting.done()
    waiting.result()
    run.shutdown()
    assert applied(url) == [1, 2, 3]
