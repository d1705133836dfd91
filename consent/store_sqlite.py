"""The embedded consent store: one SQLite file in WAL mode, safe from many threads.

Reads use pooled connections, one per concurrent reader, so lookups on the exchange path
never wait for each other or for a writer (WAL). Writes go through two connections under
one process lock, each in a BEGIN IMMEDIATE transaction (so another process writing the
same file makes us wait up to the busy timeout instead of failing):
- revisions with synchronous=FULL: a revocation acknowledged to a citizen must survive a
  power cut (an fsync of the WAL per append, ~0.3 ms here; appends are rare);
- use counters with synchronous=NORMAL: they are written on the exchange path (~15 µs
  instead of ~300 µs); a power cut can lose the last uses counted (never corrupt the file),
  which at worst lets a capped consent be used a little more often in that window.
The connections, transactions and migrations are gateway/storage/sqlite.py's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consent.migrations import SQLITE_LINE
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
from gateway.storage.sqlite import BUSY_TIMEOUT_MS, SQLiteFile

_R_COLUMNS = ", ".join(f"r.{c}" for c in COLUMNS)
_PLACEHOLDERS = ", ".join("?" for _ in COLUMNS)
# The row is the latest revision of its consent (UNIQUE(consent_id, revision) index probe).
_IS_LATEST = """NOT EXISTS (SELECT 1 FROM consent_revision AS n
    WHERE n.consent_id = r.consent_id AND n.revision > r.revision)"""

_INSERT_FIRST = f"INSERT INTO consent_revision ({COLUMN_LIST}) VALUES ({_PLACEHOLDERS})"
# Inserted only if the revision it claims to follow is stored with that hash; the UNIQUE
# constraint turns a concurrent (or repeated) append of the same revision into a conflict.
_INSERT_NEXT = f"""INSERT INTO consent_revision ({COLUMN_LIST}) SELECT {_PLACEHOLDERS}
    WHERE EXISTS (SELECT 1 FROM consent_revision
        WHERE consent_id = ? AND revision = ? AND hash = ?)"""
_LATEST = f"""SELECT {COLUMN_LIST} FROM consent_revision WHERE consent_id = ?
    ORDER BY revision DESC LIMIT 1"""
_HISTORY = f"SELECT {COLUMN_LIST} FROM consent_revision WHERE consent_id = ? ORDER BY revision"
# json_each drives the loop (CROSS JOIN fixes the order): one index probe per subject.
_FOR_SUBJECTS = f"""SELECT {_R_COLUMNS} FROM json_each(?) AS s
    CROSS JOIN consent_revision AS r
    WHERE r.subject_kind = json_extract(s.value, '$[0]')
      AND r.subject = json_extract(s.value, '$[1]') AND r.grantee = ?
      AND {_IS_LATEST}
    ORDER BY r.consent_id"""
_BY_SUBJECT = f"""SELECT {_R_COLUMNS} FROM consent_revision AS r
    WHERE r.subject_kind = ? AND r.subject = ? AND r.consent_id > ? AND {_IS_LATEST}
    ORDER BY r.consent_id LIMIT ?"""
_COUNT_USE = """INSERT INTO consent_use (consent_id, window_start, count) VALUES (?, ?, 1)
    ON CONFLICT (consent_id, window_start) DO UPDATE SET count = count + 1
    RETURNING count"""
_BETWEEN = f"""SELECT {COLUMN_LIST} FROM consent_revision
    WHERE recorded_at >= ? AND recorded_at < ? ORDER BY recorded_at, consent_id, revision"""
_EXPIRING = f"""SELECT {_R_COLUMNS} FROM consent_revision AS r
    WHERE r.valid_until >= ? AND r.valid_until < ? AND r.status = 'active' AND {_IS_LATEST}
    ORDER BY r.valid_until, r.consent_id"""
_CHANGED = "SELECT seq, consent_id FROM consent_revision WHERE seq > ? ORDER BY seq LIMIT ?"


class SQLiteConsentStore:
    """ConsentStore over data_dir/consent.sqlite (see the module docstring for why)."""

    def __init__(self, path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self.statements = 0  # statements sent, for tests and metrics (not exact under races)
        self._db = SQLiteFile(path, what="consent store", busy_timeout_ms=busy_timeout_ms)
        try:
            self._revisions = self._db.writer("FULL")
            self._counters = self._db.writer("NORMAL")
            self._db.migrate(self._revisions, SQLITE_LINE)
        except BaseException:
            self.close()
            raise

    def _run(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.statements += 1
        return conn.execute(sql, params).fetchall()

    def append(self, record: ConsentRecord) -> None:
        check_appendable(record)
        row = to_row(record)
        with self._db.write(self._revisions) as conn:
            try:
                if record.revision == 1:
                    self._run(conn, _INSERT_FIRST, row)
                    return
                follows = (record.consent_id, record.revision - 1, record.prev_hash)
                self.statements += 1
                if conn.execute(_INSERT_NEXT, (*row, *follows)).rowcount == 1:
                    return
            except sqlite3.IntegrityError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_CONSTRAINT_UNIQUE:
                    raise
                raise ConsentConflictError(
                    f"consent {record.consent_id}: revision {record.revision} exists already"
                ) from exc
            stored = self._run(
                conn,
                "SELECT max(revision) FROM consent_revision WHERE consent_id = ?",
                (record.consent_id,),
            )[0][0]
            raise ConsentConflictError(
                f"consent {record.consent_id}: revision {record.revision} does not follow "
                f"the stored latest revision ({stored or 'none'}) and its hash"
            )

    def latest(self, consent_id: str) -> ConsentRecord | None:
        with self._db.read() as conn:
            rows = self._run(conn, _LATEST, (consent_id,))
        return from_row(rows[0]) if rows else None

    def history(self, consent_id: str) -> list[ConsentRecord]:
        with self._db.read() as conn:
            rows = self._run(conn, _HISTORY, (consent_id,))
        return [from_row(r) for r in rows]

    def for_subjects(
        self, subjects: Sequence[tuple[SubjectKind, str]], grantee: str
    ) -> list[ConsentRecord]:
        out: list[ConsentRecord] = []
        with self._db.read() as conn:
            for part in chunks(unique_subjects(subjects), SUBJECTS_PER_QUERY):
                rows = self._run(conn, _FOR_SUBJECTS, (json.dumps(part), grantee))
                out.extend(from_row(r) for r in rows)
        return out

    def list_by_subject(
        self, kind: SubjectKind, subject: str, page_size: int, page_token: str = ""
    ) -> tuple[list[ConsentRecord], str]:
        after = check_page(page_size, page_token)
        with self._db.read() as conn:
            rows = self._run(
                conn, _BY_SUBJECT, (SubjectKind(kind).value, subject, after, page_size + 1)
            )
        return page_of([from_row(r) for r in rows], page_size)

    def count_use(self, consent_id: str, window_start: int) -> int:
        with self._db.write(self._counters) as conn:
            ((count,),) = self._run(conn, _COUNT_USE, (consent_id, window_start))
        return int(count)

    def changed_since(self, cursor: int, limit: int = CHANGES_PER_CALL) -> tuple[list[str], int]:
        with self._db.read() as conn:
            rows = self._run(conn, _CHANGED, (cursor, limit))
        return new_cursor(cursor, rows)

    def revisions_between(self, since_s: int, until_s: int) -> list[ConsentRecord]:
        with self._db.read() as conn:
            rows = self._run(conn, _BETWEEN, (since_s, until_s))
        return [from_row(r) for r in rows]

    def expiring_between(self, since_s: int, until_s: int) -> list[ConsentRecord]:
        with self._db.read() as conn:
            rows = self._run(conn, _EXPIRING, (since_s, until_s))
        return [from_row(r) for r in rows]

    def close(self) -> None:
        """Close every connection (a WAL checkpoint runs when the last one closes)."""
        self._db.close()
