"""The shared consent store: PostgreSQL, for several gateway replicas at once.

Connections come from a small pool in autocommit mode, so a read is one round trip; writes
open explicit transactions. Every append first takes a transaction-scoped advisory lock
(one per schema), which makes `seq` order equal commit order: without it a revision could
commit after a later `seq` was already seen by a replica polling `changed_since`, and that
replica would never learn of it. Appends are rare (grants and revocations), so serialising
them costs nothing the exchange path feels.

Tables live in the connection's current schema: the URL's
`options=-csearch_path%3D<schema>` (passed through to libpq) picks it.

`StorePool` is the connection pool of both PostgreSQL stores (consent and audit), tuned to
answer fast while the database is down and to serve again within about a second of its
return (docs/audit-storage.md, "When the database is down").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Connection, OperationalError, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from consent.migrations import MIGRATIONS_TABLE, POSTGRES, check_known
from consent.model import ConsentRecord, SubjectKind
from consent.store import (
    CHANGES_PER_CALL,
    COLUMN_LIST,
    COLUMNS,
    SUBJECTS_PER_QUERY,
    ConsentConflictError,
    check_appendable,
    check_page,
    chunks,
    from_row,
    new_cursor,
    page_of,
    to_row,
    unique_subjects,
)

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

_R_COLUMNS = ", ".join(f"r.{c}" for c in COLUMNS)
_PLACEHOLDERS = ", ".join("%s" for _ in COLUMNS)
_IS_LATEST = """NOT EXISTS (SELECT 1 FROM consent_revision AS n
    WHERE n.consent_id = r.consent_id AND n.revision > r.revision)"""

_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_INSERT_FIRST = f"INSERT INTO consent_revision ({COLUMN_LIST}) VALUES ({_PLACEHOLDERS})"
_INSERT_NEXT = f"""INSERT INTO consent_revision ({COLUMN_LIST}) SELECT {_PLACEHOLDERS}
    WHERE EXISTS (SELECT 1 FROM consent_revision
        WHERE consent_id = %s AND revision = %s AND hash = %s)"""
_LATEST = f"""SELECT {COLUMN_LIST} FROM consent_revision WHERE consent_id = %s
    ORDER BY revision DESC LIMIT 1"""
_HISTORY = f"SELECT {COLUMN_LIST} FROM consent_revision WHERE consent_id = %s ORDER BY revision"
_FOR_SUBJECTS = f"""SELECT {_R_COLUMNS} FROM unnest(%s::text[], %s::text[]) AS s(kind, subject)
    JOIN consent_revision AS r ON r.subject_kind = s.kind AND r.subject = s.subject
    WHERE r.grantee = %s AND {_IS_LATEST}
    ORDER BY r.consent_id"""
_BY_SUBJECT = f"""SELECT {_R_COLUMNS} FROM consent_revision AS r
    WHERE r.subject_kind = %s AND r.subject = %s AND r.consent_id > %s AND {_IS_LATEST}
    ORDER BY r.consent_id LIMIT %s"""
_COUNT_USE = """INSERT INTO consent_use (consent_id, window_start, count) VALUES (%s, %s, 1)
    ON CONFLICT (consent_id, window_start) DO UPDATE SET count = consent_use.count + 1
    RETURNING count"""
_CHANGED = "SELECT seq, consent_id FROM consent_revision WHERE seq > %s ORDER BY seq LIMIT %s"


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

    def close(self) -> None:
        self._pool.close()


class PostgresConsentStore:
    """ConsentStore over PostgreSQL (see the module docstring for the concurrency rules)."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = POOL_MIN,
        max_size: int = POOL_MAX,
        timeout: float = POOL_TIMEOUT_S,
        open_timeout: float = OPEN_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.statements = 0  # statements sent, for tests and metrics (not exact under races)
        self._pool = StorePool(
            url,
            name="jisr-consent",
            what="consent store",
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open_timeout=open_timeout,
        )
        try:
            self._append_key = self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def _run(self, conn: Connection[TupleRow], sql: str, params: Sequence[Any] = ()) -> Any:
        self.statements += 1
        return conn.execute(sql, params)

    def _migrate(self) -> int:
        """Apply missing migrations, one transaction each, under an advisory lock so that
        replicas starting together migrate once; return this schema's append lock key."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT current_schema(), "
                "hashtextextended('jisr.consent.migrate.' || current_schema(), 0), "
                "hashtextextended('jisr.consent.append.' || current_schema(), 0)"
            ).fetchone()
            assert row is not None
            schema, migrate_key, append_key = row
            if schema is None:
                raise ValueError(
                    f"consent store: the search_path at {describe(self.url)} names no existing "
                    "schema; create it first (see docs/consent-storage.md)"
                )
            where = f"{describe(self.url)} schema {schema}"
            while True:
                with conn.transaction():
                    conn.execute(_LOCK, (migrate_key,))
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                        "version integer PRIMARY KEY, "
                        "applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    current_row = conn.execute(
                        f"SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE}"
                    ).fetchone()
                    assert current_row is not None
                    check_known(int(current_row[0]), POSTGRES, where)
                    pending = [m for m in POSTGRES if m.version > current_row[0]]
                    if not pending:
                        return int(append_key)
                    for statement in pending[0].statements:
                        conn.execute(statement)
                    conn.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES (%s)",
                        (pending[0].version,),
                    )

    def append(self, record: ConsentRecord) -> None:
        check_appendable(record)
        row = to_row(record)
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    self._run(conn, _LOCK, (self._append_key,))
                    if record.revision == 1:
                        self._run(conn, _INSERT_FIRST, row)
                        return
                    follows = (record.consent_id, record.revision - 1, record.prev_hash)
                    if self._run(conn, _INSERT_NEXT, (*row, *follows)).rowcount == 1:
                        return
            except errors.UniqueViolation as exc:
                raise ConsentConflictError(
                    f"consent {record.consent_id}: revision {record.revision} exists already"
                ) from exc
            stored = self._run(
                conn,
                "SELECT max(revision) FROM consent_revision WHERE consent_id = %s",
                (record.consent_id,),
            ).fetchone()[0]
        raise ConsentConflictError(
            f"consent {record.consent_id}: revision {record.revision} does not follow "
            f"the stored latest revision ({stored or 'none'}) and its hash"
        )

    def latest(self, consent_id: str) -> ConsentRecord | None:
        with self._pool.connection() as conn:
            row = self._run(conn, _LATEST, (consent_id,)).fetchone()
        return None if row is None else from_row(row)

    def history(self, consent_id: str) -> list[ConsentRecord]:
        with self._pool.connection() as conn:
            rows = self._run(conn, _HISTORY, (consent_id,)).fetchall()
        return [from_row(r) for r in rows]

    def for_subjects(
        self, subjects: Sequence[tuple[SubjectKind, str]], grantee: str
    ) -> list[ConsentRecord]:
        out: list[ConsentRecord] = []
        parts = chunks(unique_subjects(subjects), SUBJECTS_PER_QUERY)
        if not parts:
            return out
        with self._pool.connection() as conn:
            for part in parts:
                kinds = [k for k, _ in part]
                names = [s for _, s in part]
                rows = self._run(conn, _FOR_SUBJECTS, (kinds, names, grantee)).fetchall()
                out.extend(from_row(r) for r in rows)
        return out

    def list_by_subject(
        self, kind: SubjectKind, subject: str, page_size: int, page_token: str = ""
    ) -> tuple[list[ConsentRecord], str]:
        after = check_page(page_size, page_token)
        with self._pool.connection() as conn:
            rows = self._run(
                conn, _BY_SUBJECT, (SubjectKind(kind).value, subject, after, page_size + 1)
            ).fetchall()
        return page_of([from_row(r) for r in rows], page_size)

    def count_use(self, consent_id: str, window_start: int) -> int:
        """One autocommitted upsert: atomic across threads, processes and replicas."""
        with self._pool.connection() as conn:
            row = self._run(conn, _COUNT_USE, (consent_id, window_start)).fetchone()
        return int(row[0])

    def changed_since(self, cursor: int, limit: int = CHANGES_PER_CALL) -> tuple[list[str], int]:
        with self._pool.connection() as conn:
            rows = self._run(conn, _CHANGED, (cursor, limit)).fetchall()
        return new_cursor(cursor, rows)

    def close(self) -> None:
        self._pool.close()
