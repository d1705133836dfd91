"""PostgreSQL for the stores that several gateway replicas share.

`StorePool` is the connection pool of every PostgreSQL store (autocommit connections:
a read is one round trip; writes open explicit transactions), tuned to answer fast while
the database is down and to serve again within about a second of its return
(docs/audit-storage.md, "When the database is down"). It also migrates a store's tables
(gateway/storage/migrations.py) under an advisory lock, so that replicas starting
together migrate once.

Tables live in the connection's current schema: the URL's
`options=-csearch_path%3D<schema>` (passed through to libpq) picks it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Connection, OperationalError
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.storage.migrations import VersionLine, VersionTable, applied_version, migrate

POOL_MIN = 1
POOL_MAX = 8
# At start: how long the pool may wait for its first connection, retrying with its own
# backoff (a gateway that cannot reach the database fails at start).
OPEN_TIMEOUT_S = 10.0
# libpq's connect_timeout for every connection the pool opens, unless the URL sets one:
# a TCP connect to a host that does not answer gives up after this. 2 s is libpq's
# minimum (1 would be read as 2).
CONNECT_TIMEOUT_S = 2
# While the database answers: how long a caller may wait for a free connection.
POOL_TIMEOUT_S = 1.0
# While it is known to be down: one caller at a time, at most once per this interval,
# tries one connection (the probe); every other call fails at once.
PROBE_INTERVAL_S = 0.25
# After start, a background reconnection of the pool tries twice, this far apart, then
# gives up: with the default (minutes of exponential backoff: 1, 2, 4, 8 s...) a pool
# serves again only 10 s or more after the database has returned.
RECONNECT_TIMEOUT_S = 0.5

LOCK = "SELECT pg_advisory_xact_lock(%s)"
# A transaction-scoped advisory lock's key, one per purpose and schema: stores sharing a
# database in different schemas never wait for each other.
_LOCK_KEY = "SELECT hashtextextended(%s || current_schema(), 0)"

VERSION_TABLE = VersionTable(
    create="CREATE TABLE IF NOT EXISTS {table} ("
    "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    insert="INSERT INTO {table} (version) VALUES (%s)",
    row=lambda version: (version,),
)


def describe(url: str) -> str:
    """Where a URL points, for messages, without its password."""
    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "<unparsable PostgreSQL URL>"
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


class StoreUnavailableError(ConnectionError):
    """The database is known to be down (a connection broke, or connecting failed) and it
    is not this call's turn to probe it: the call failed at once."""


class StorePool:
    """The connection pool of a PostgreSQL store (autocommit connections), which fails fast
    while the database is down and serves again soon after it returns.

    - Connections are opened with a short `connect_timeout` (CONNECT_TIMEOUT_S, unless the
      URL names one); background reconnections give up after RECONNECT_TIMEOUT_S instead
      of backing off for minutes.
    - The database is *down* once a connection breaks in use or a reconnection gives up.
      Every idle connection is dropped then (they lead to the same dead server). While it
      is down, calls raise StoreUnavailableError at once, except one caller at a time, at
      most every PROBE_INTERVAL_S, which tries one connection of its own (no retry storm,
      and no pool reconnection logging a warning per attempt); when that connects, the
      database is up again and the pool refills on demand.

    `name` names the pool in psycopg_pool's logs; `what` the store in errors.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        what: str,
        min_size: int = POOL_MIN,
        max_size: int = POOL_MAX,
        timeout: float = POOL_TIMEOUT_S,
        open_timeout: float = OPEN_TIMEOUT_S,
    ) -> None:
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in conninfo_to_dict(url):
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
        self._url = url
        self._kwargs = kwargs
        self._what = what
        self.timeout = timeout
        self.down = False  # a connection broke or a reconnection failed; no probe since
        self._probe_at = 0.0  # time.monotonic() of the next probe while down
        self._probe_lock = threading.Lock()
        self._pool: ConnectionPool[Connection[TupleRow]] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
            open=False,
            timeout=timeout,
            name=name,
            reconnect_timeout=open_timeout,
            reconnect_failed=self._reconnect_failed,
        )
        try:
            self._pool.open(wait=True, timeout=open_timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise ConnectionError(
                f"{what}: no PostgreSQL answered at {describe(url)} within {open_timeout:g} s"
            ) from exc
        self._pool.reconnect_timeout = RECONNECT_TIMEOUT_S  # from now on: fail fast

    @contextmanager
    def connection(self) -> Iterator[Connection[TupleRow]]:
        """A connection for the block. Raises StoreUnavailableError at once while the
        database is down (but for the probe), PoolTimeout when no connection comes within
        `timeout`, psycopg errors from the block."""
        if self.down:
            self._probe()
        with self._pool.connection(self.timeout) as conn:
            try:
                yield conn
            except OperationalError:
                if conn.broken:
                    self._lost()
                raise

    def _probe(self) -> None:
        """While down: return if this caller's own connection attempt succeeds (the
        database is up again), else raise StoreUnavailableError."""
        if time.monotonic() < self._probe_at or not self._probe_lock.acquire(blocking=False):
            raise StoreUnavailableError(f"{self._what}: the database is down")
        try:
            if not self.down:
                return  # another caller's probe found it up meanwhile
            try:
                psycopg.connect(self._url, **self._kwargs).close()
            except psycopg.Error as exc:
                self._probe_at = time.monotonic() + PROBE_INTERVAL_S
                raise StoreUnavailableError(f"{self._what}: the database is down") from exc
            self.down = False
        finally:
            self._probe_lock.release()

    def _lost(self) -> None:
        """A connection broke: the others are likely dead too (server restarted or gone);
        drop the idle ones now rather than fail one call on each later."""
        self._down()
        drain = getattr(self._pool, "drain", None)  # psycopg_pool >= 3.3
        if drain is not None:
            drain()

    def _reconnect_failed(self, pool: ConnectionPool[Connection[TupleRow]]) -> None:
        self._down()

    def _down(self) -> None:
        if not self.down:
            self._probe_at = time.monotonic() + PROBE_INTERVAL_S
            self.down = True

    def lock_key(self, purpose: str) -> int:
        """The advisory lock key of `purpose` (e.g. "jisr.consent.append.") in this
        connection's schema: the same number on every replica and Jisr version."""
        with self.connection() as conn:
            return _lock_key(conn, purpose)

    def migrate(self, line: VersionLine, *, docs: str) -> None:
        """Apply the migrations the current schema lacks, one transaction each, under the
        line's advisory lock ("jisr.<store>.migrate."). A search_path naming no existing
        schema is a ValueError pointing at `docs` (where creating one is explained)."""
        with self.connection() as conn:
            row = conn.execute("SELECT current_schema()").fetchone()
            schema = None if row is None else row[0]
            if schema is None:
                raise ValueError(
                    f"{self._what}: the search_path at {describe(self._url)} names no "
                    f"existing schema; create it first (see {docs})"
                )
            key = _lock_key(conn, f"jisr.{line.store}.migrate.")

            @contextmanager
            def locked() -> Iterator[Connection[TupleRow]]:
                with conn.transaction():
                    conn.execute(LOCK, (key,))
                    yield conn

            migrate(locked, line, f"{describe(self._url)} schema {schema}", VERSION_TABLE)

    def applied_version(self, line: VersionLine) -> tuple[str, int | None]:
        """Where the store is (host:port/database schema ...) and its schema version on
        `line`, None without a version table (for a read-only open, which must not
        migrate)."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT current_schema(), to_regclass(%s) IS NOT NULL", (line.table,)
            ).fetchone()
            assert row is not None
            schema, found = row
            where = f"{describe(self._url)} schema {schema or '(none)'}"
            if schema is None or not found:
                return where, None
            return where, applied_version(conn, line.table)

    def close(self) -> None:
        self._pool.close()


def _lock_key(conn: Connection[TupleRow], purpose: str) -> int:
    row = conn.execute(_LOCK_KEY, (purpose,)).fetchone()
    assert row is not None
    return int(row[0])
