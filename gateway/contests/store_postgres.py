"""The shared contest store: PostgreSQL, when several gateway replicas move the same cases.

Connections come from gateway/storage/postgres.py's `StorePool` (autocommit, failing fast
while the database is down). `create` and `apply` are explicit transactions of two
statements. `apply`'s UPDATE ... WHERE version = expected locks the row: a concurrent
`apply` waits for it, then finds the version changed (READ COMMITTED re-reads the row) and
updates nothing, so exactly one of them appends its event.

Tables live in the connection's current schema (the URL's
`options=-csearch_path%3D<schema>`), with their versions in `contest_schema_migrations`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.contests.cases import ESCALATED, OPEN, Case, CaseEvent, DuplicateCaseError, Step
from gateway.contests.migrations import (
    CASE_COLUMNS,
    CASE_LIST,
    EVENT_COLUMNS,
    EVENT_LIST,
    MUTABLE_COLUMNS,
    POSTGRES_LINE,
    case_from_row,
    case_row,
    check_limit,
    check_states,
    check_step,
    event_from_row,
    event_row,
    mutable_row,
)
from gateway.storage.postgres import (
    OPEN_TIMEOUT_S,
    POOL_MAX,
    POOL_MIN,
    POOL_TIMEOUT_S,
    StorePool,
)

_CREATE = f"""INSERT INTO contest_case ({CASE_LIST})
    VALUES ({", ".join("%s" for _ in CASE_COLUMNS)})
    ON CONFLICT (case_id) DO NOTHING"""
_APPEND = f"""INSERT INTO contest_event ({EVENT_LIST})
    VALUES ({", ".join("%s" for _ in EVENT_COLUMNS)})"""
_APPLY = f"""UPDATE contest_case SET {", ".join(f"{c} = %s" for c in MUTABLE_COLUMNS)}
    WHERE case_id = %s AND version = %s"""
_CASE = f"SELECT {CASE_LIST} FROM contest_case WHERE case_id = %s"
_FOR_INSTITUTION = f"""SELECT {CASE_LIST} FROM contest_case
    WHERE institution = %s AND state = ANY(%s) ORDER BY answer_due_us, case_id LIMIT %s"""
_FOR_SUBJECT = f"""SELECT {CASE_LIST} FROM contest_case WHERE subject_hash = %s AND portal = %s
    ORDER BY opened_us DESC, case_id"""
_FOR_RECORDS = f"""SELECT {CASE_LIST} FROM contest_case WHERE record_id = ANY(%s)
    ORDER BY opened_us, case_id"""
_ESCALATED = f"""SELECT {CASE_LIST} FROM contest_case WHERE state = '{ESCALATED}'
    ORDER BY updated_us, case_id LIMIT %s"""
_OVERDUE = f"""SELECT {CASE_LIST} FROM contest_case
    WHERE state = '{OPEN}' AND answer_due_us <= %s ORDER BY answer_due_us, case_id LIMIT %s"""
_HISTORY = f"SELECT {EVENT_LIST} FROM contest_event WHERE case_id = %s ORDER BY seq"
_STEPS = f"""SELECT c.institution, c.opened_us, c.subject_hash,
    {", ".join("e." + col for col in EVENT_COLUMNS)}
    FROM contest_event e JOIN contest_case c ON c.case_id = e.case_id
    WHERE e.at_us >= %s AND e.at_us < %s ORDER BY e.at_us, e.case_id, e.seq"""


class PostgresContestStore:
    """ContestStore over PostgreSQL (see the module docstring)."""

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
        self._pool = StorePool(
            url,
            name="jisr-contests",
            what="contest store",
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open_timeout=open_timeout,
        )
        try:
            self._pool.migrate(POSTGRES_LINE, docs="docs/audit-storage.md")
        except BaseException:
            self._pool.close()
            raise

    def create(self, case: Case, event: CaseEvent) -> None:
        check_step(case, event, 0)
        with self._pool.connection() as conn, conn.transaction():
            if conn.execute(_CREATE, case_row(case)).rowcount != 1:
                raise DuplicateCaseError(f"case {case.case_id} exists already")
            conn.execute(_APPEND, event_row(event))

    def apply(self, case: Case, event: CaseEvent, expected_version: int) -> bool:
        check_step(case, event, expected_version)
        values = (*mutable_row(case), case.case_id, expected_version)
        with self._pool.connection() as conn, conn.transaction():
            if conn.execute(_APPLY, values).rowcount != 1:
                return False
            conn.execute(_APPEND, event_row(event))
        return True

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def case(self, case_id: str) -> Case | None:
        rows = self._all(_CASE, (case_id,))
        return case_from_row(rows[0]) if rows else None

    def cases_for_institution(
        self, institution: str, states: Sequence[str], limit: int
    ) -> list[Case]:
        check_states(states)
        check_limit(limit)
        rows = self._all(_FOR_INSTITUTION, (institution, list(states), limit))
        return [case_from_row(r) for r in rows]

    def cases_for_subject(self, subject_hash: str, portal: str) -> list[Case]:
        return [case_from_row(r) for r in self._all(_FOR_SUBJECT, (subject_hash, portal))]

    def latest_for_records(self, record_ids: Sequence[str]) -> dict[str, Case]:
        found: dict[str, Case] = {}
        for row in self._all(_FOR_RECORDS, (list(dict.fromkeys(record_ids)),)):
            case = case_from_row(row)
            found[case.record_id] = case  # oldest first: the last one stays
        return found

    def escalated(self, limit: int) -> list[Case]:
        check_limit(limit)
        return [case_from_row(r) for r in self._all(_ESCALATED, (limit,))]

    def overdue(self, now_us: int, limit: int) -> list[Case]:
        check_limit(limit)
        return [case_from_row(r) for r in self._all(_OVERDUE, (now_us, limit))]

    def steps_between(self, since_us: int, until_us: int) -> list[Step]:
        rows = self._all(_STEPS, (since_us, until_us))
        return [Step(str(r[0]), int(r[1]), str(r[2]), event_from_row(r[3:])) for r in rows]

    def history(self, case_id: str) -> list[CaseEvent]:
        return [event_from_row(r) for r in self._all(_HISTORY, (case_id,))]

    def close(self) -> None:
        self._pool.close()
