"""The shared consent store: PostgreSQL, for several gateway replicas at once.

Connections come from a small pool in autocommit mode, so a read is one round trip; writes
open explicit transactions. Every append first takes a transaction-scoped advisory lock
(one per schema), which makes `seq` order equal commit order: without it a revision could
commit after a later `seq` was already seen by a replica polling `changed_since`, and that
replica would never learn of it. Appends are rare (grants and revocations), so serialising
them costs nothing the exchange path feels.

Tables live in the connection's current schema: the URL's
`options=-csearch_path%3D<schema>` (passed through to libpq) picks it. Connections come
from `gateway.storage.postgres.StorePool`, shared with the audit store: it fails fast
while the database is down and serves again within about a second of its return
(docs/audit-storage.md, "When the database is down").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection, errors
from psycopg.rows import TupleRow

from consent.migrations import POSTGRES_LINE
from consent.model import ConsentRecord, SubjectKind
from consent.store_common import (
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
from gateway.storage.postgres import (
    LOCK,
    OPEN_TIMEOUT_S,
    POOL_MAX,
    POOL_MIN,
    POOL_TIMEOUT_S,
    StorePool,
)

_R_COLUMNS = ", ".join(f"r.{c}" for c in COLUMNS)
_PLACEHOLDERS = ", ".join("%s" for _ in COLUMNS)
_IS_LATEST = """NOT EXISTS (SELECT 1 FROM consent_revision AS n
    WHERE n.consent_id = r.consent_id AND n.revision > r.revision)"""

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
_BETWEEN = f"""SELECT {COLUMN_LIST} FROM consent_revision
    WHERE recorded_at >= %s AND recorded_at < %s ORDER BY recorded_at, consent_id, revision"""
_EXPIRING = f"""SELECT {_R_COLUMNS} FROM consent_revision AS r
    WHERE r.valid_until >= %s AND r.valid_until < %s AND r.status = 'active' AND {_IS_LATEST}
    ORDER BY r.valid_until, r.consent_id"""
_CHANGED = "SELECT seq, consent_id FROM consent_revision WHERE seq > %s ORDER BY seq LIMIT %s"


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
        """Apply missing migrations (once across replicas starting together); return this
        schema's append lock key."""
        self._pool.migrate(POSTGRES_LINE, docs="docs/consent-storage.md")
        return self._pool.lock_key("jisr.consent.append.")

    def append(self, record: ConsentRecord) -> None:
        check_appendable(record)
        row = to_row(record)
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    self._run(conn, LOCK, (self._append_key,))
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

    def revisions_between(self, since_s: int, until_s: int) -> list[ConsentRecord]:
        with self._pool.connection() as conn:
            rows = self._run(conn, _BETWEEN, (since_s, until_s)).fetchall()
        return [from_row(r) for r in rows]

    def expiring_between(self, since_s: int, until_s: int) -> list[ConsentRecord]:
        with self._pool.connection() as conn:
            rows = self._run(conn, _EXPIRING, (since_s, until_s)).fetchall()
        return [from_row(r) for r in rows]

    def close(self) -> None:
        self._pool.close()
