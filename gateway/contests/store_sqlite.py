"""The embedded contest store: state_dir/contests.sqlite in WAL mode, safe from many threads.

gateway/storage/sqlite.py makes it safe: pooled reader connections that never wait (WAL),
and writes serialised under one process lock in BEGIN IMMEDIATE transactions (another
process waits up to the busy timeout instead of failing). One writer, synchronous=FULL:
an answer or an escalation acknowledged must survive a power cut, and cases change
rarely (days apart), so the fsync per commit costs nothing that matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.contests.cases import ESCALATED, OPEN, Case, CaseEvent, DuplicateCaseError, Step
from gateway.contests.migrations import (
    CASE_COLUMNS,
    CASE_LIST,
    EVENT_COLUMNS,
    EVENT_LIST,
    MUTABLE_COLUMNS,
    SQLITE_LINE,
    case_from_row,
    case_row,
    check_limit,
    check_states,
    check_step,
    event_from_row,
    event_row,
    mutable_row,
)
from gateway.storage.sqlite import BUSY_TIMEOUT_MS, SQLiteFile

_CREATE = f"""INSERT INTO contest_case ({CASE_LIST})
    VALUES ({", ".join("?" for _ in CASE_COLUMNS)})
    ON CONFLICT (case_id) DO NOTHING"""
_APPEND = f"INSERT INTO contest_event ({EVENT_LIST}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
_APPLY = f"""UPDATE contest_case SET {", ".join(f"{c} = ?" for c in MUTABLE_COLUMNS)}
    WHERE case_id = ? AND version = ?"""
_CASE = f"SELECT {CASE_LIST} FROM contest_case WHERE case_id = ?"
_FOR_INSTITUTION = f"""SELECT {CASE_LIST} FROM contest_case
    WHERE institution = ? AND state IN ({{marks}}) ORDER BY answer_due_us, case_id LIMIT ?"""
_FOR_SUBJECT = f"""SELECT {CASE_LIST} FROM contest_case WHERE subject_hash = ? AND portal = ?
    ORDER BY opened_us DESC, case_id"""
_ESCALATED = f"""SELECT {CASE_LIST} FROM contest_case WHERE state = '{ESCALATED}'
    ORDER BY updated_us, case_id LIMIT ?"""
_OVERDUE = f"""SELECT {CASE_LIST} FROM contest_case
    WHERE state = '{OPEN}' AND answer_due_us <= ? ORDER BY answer_due_us, case_id LIMIT ?"""
_FOR_RECORDS = f"""SELECT {CASE_LIST} FROM contest_case WHERE record_id IN ({{marks}})
    ORDER BY opened_us, case_id"""
# Records per query of `latest_for_records` (well under SQLite's bound-parameter limit).
_RECORD_CHUNK = 500
_HISTORY = f"SELECT {EVENT_LIST} FROM contest_event WHERE case_id = ? ORDER BY seq"
_STEPS = f"""SELECT c.institution, c.opened_us, c.subject_hash,
    {", ".join("e." + col for col in EVENT_COLUMNS)}
    FROM contest_event e JOIN contest_case c ON c.case_id = e.case_id
    WHERE e.at_us >= ? AND e.at_us < ? ORDER BY e.at_us, e.case_id, e.seq"""


class SQLiteContestStore:
    """ContestStore over one SQLite file (see the module docstring for why)."""

    def __init__(self, path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self._db = SQLiteFile(path, what="contest store", busy_timeout_ms=busy_timeout_ms)
        try:
            self._writer = self._db.writer("FULL")
            self._db.migrate(self._writer, SQLITE_LINE)
        except BaseException:
            self.close()
            raise

    def create(self, case: Case, event: CaseEvent) -> None:
        check_step(case, event, 0)
        with self._db.write(self._writer) as conn:
            if conn.execute(_CREATE, case_row(case)).rowcount != 1:
                raise DuplicateCaseError(f"case {case.case_id} exists already")
            conn.execute(_APPEND, event_row(event))

    def apply(self, case: Case, event: CaseEvent, expected_version: int) -> bool:
        check_step(case, event, expected_version)
        values = (*mutable_row(case), case.case_id, expected_version)
        with self._db.write(self._writer) as conn:
            if conn.execute(_APPLY, values).rowcount != 1:
                return False
            conn.execute(_APPEND, event_row(event))
        return True

    def case(self, case_id: str) -> Case | None:
        rows = self._select(_CASE, (case_id,))
        return case_from_row(rows[0]) if rows else None

    def cases_for_institution(
        self, institution: str, states: Sequence[str], limit: int
    ) -> list[Case]:
        check_states(states)
        check_limit(limit)
        if not states:
            return []
        sql = _FOR_INSTITUTION.format(marks=", ".join("?" * len(states)))
        return [case_from_row(r) for r in self._select(sql, (institution, *states, limit))]

    def cases_for_subject(self, subject_hash: str, portal: str) -> list[Case]:
        return [case_from_row(r) for r in self._select(_FOR_SUBJECT, (subject_hash, portal))]

    def latest_for_records(self, record_ids: Sequence[str]) -> dict[str, Case]:
        wanted = list(dict.fromkeys(record_ids))
        found: dict[str, Case] = {}
        for start in range(0, len(wanted), _RECORD_CHUNK):
            chunk = wanted[start : start + _RECORD_CHUNK]
            sql = _FOR_RECORDS.format(marks=", ".join("?" * len(chunk)))
            for row in self._select(sql, tuple(chunk)):
                case = case_from_row(row)
                found[case.record_id] = case  # oldest first: the last one stays
        return found

    def escalated(self, limit: int) -> list[Case]:
        check_limit(limit)
        return [case_from_row(r) for r in self._select(_ESCALATED, (limit,))]

    def overdue(self, now_us: int, limit: int) -> list[Case]:
        check_limit(limit)
        return [case_from_row(r) for r in self._select(_OVERDUE, (now_us, limit))]

    def steps_between(self, since_us: int, until_us: int) -> list[Step]:
        rows = self._select(_STEPS, (since_us, until_us))
        return [Step(str(r[0]), int(r[1]), str(r[2]), event_from_row(r[3:])) for r in rows]

    def history(self, case_id: str) -> list[CaseEvent]:
        return [event_from_row(r) for r in self._select(_HISTORY, (case_id,))]

    def _select(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._db.read() as conn:
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close every connection (a WAL checkpoint runs when the last one closes)."""
        self._db.close()
