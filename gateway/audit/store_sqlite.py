"""The embedded audit store: one SQLite file in WAL mode, safe from many threads.

Appends go through one connection with synchronous=FULL: the audit record must survive a
power cut once the reply it records has been sent, so every commit fsyncs the WAL (the
writer's group commit spreads that fsync over every record of the batch). Writes take the
file's write lock up front (BEGIN IMMEDIATE), so gateway processes sharing the file wait
for each other (up to the busy timeout) instead of failing. Reads use pooled read-only
connections and never wait for the writer (WAL).

Opened `read_only` (the DPO's verify and export), the store touches nothing: the file is
opened through a `mode=ro` URI, so a missing file is an error rather than a new empty
trail, and no migration runs. The connections, transactions and migrations are
gateway/storage/sqlite.py's.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from gateway.audit.migrations import SQLITE_LINE
from gateway.audit.record import GENESIS, AuditRecord, Checkpoint
from gateway.audit.store_common import (
    CHECKPOINT_COLUMN_LIST,
    CHECKPOINT_COLUMNS,
    COLUMN_LIST,
    COLUMNS,
    COVERING_SQL,
    MERGE_ROWS,
    PRUNE_CHUNK,
    SQLITE_HAS_SUBJECT,
    STREAM_BATCH,
    TREE_START_SQL,
    AuditTrailMissingError,
    ChainConflictError,
    Query,
    check_batch,
    check_page,
    check_readable,
    checkpoint_from_row,
    checkpoint_row,
    covering_of,
    from_row,
    page_of,
    query_sql,
    replay_error,
    subject_key,
    subject_rows,
    to_row,
)
from gateway.storage.sqlite import BUSY_TIMEOUT_MS, SQLiteFile

log = logging.getLogger("jisr.audit")

# A replayed (requester, jti, part) is skipped (rowcount 0) rather than raised, so the
# offending record is known without parsing an error message.
_INSERT = f"""INSERT INTO audit_record ({COLUMN_LIST}) VALUES ({", ".join("?" for _ in COLUMNS)})
    ON CONFLICT (requester, jti, part) WHERE jti <> '' DO NOTHING"""
_INSERT_SUBJECT = "INSERT INTO audit_subject_recent (subject_key, node, seq) VALUES (?, ?, ?)"
# The recent tier moved into the large one, one range of keys at a time (read in key
# order: its primary key), a range after each append (`_move_range`).
_MERGE = (
    "INSERT INTO audit_subject SELECT subject_key, node, seq FROM audit_subject_recent"
    " WHERE subject_key BETWEEN ? AND ?",
    "DELETE FROM audit_subject_recent WHERE subject_key BETWEEN ? AND ?",
)
# How many ranges of keys a move takes, one at the end of each append's transaction.
# Moving the whole tier at once held the write lock 0.05-0.3 s (growing with the trail):
# the process's next record, and every other process's, waited that long, and their
# batch streams with them. A range is a sixteenth of that; the large tier's leaf pages
# are still written about once per move (the ranges' keys are apart; only the pages at
# their edges and the tree's upper pages are written by several).
MERGE_RANGES = 16
_INSERT_CHECKPOINT = f"""INSERT INTO audit_checkpoint ({CHECKPOINT_COLUMN_LIST})
    VALUES ({", ".join("?" for _ in CHECKPOINT_COLUMNS)})"""
_TREE_START = TREE_START_SQL.format(p="?")
_COVERING = COVERING_SQL.format(p="?")
_HASH_AT = "SELECT hash FROM audit_record WHERE node = ? AND seq = ?"
# A call's own record (part 0), not its batches' or notifications', nor the gateway's own
# records of proposed actions (their `sub`): what an institution's daily quota counts.
_COUNT_SINCE = (
    "SELECT count(*) FROM audit_record WHERE requester = ? AND at_us >= ?"
    " AND part = 0 AND requester_sub <> 'jisr:due-process'"
)
_HEAD = "SELECT seq, hash FROM audit_record WHERE node = ? ORDER BY seq DESC LIMIT 1"
_STREAM = f"""SELECT {COLUMN_LIST} FROM audit_record WHERE node = ? AND seq > ?
    ORDER BY seq LIMIT ?"""
_ROWS = f"SELECT {COLUMN_LIST} FROM audit_record WHERE node = ? ORDER BY seq"
# Distinct values by skipping through an index (one probe per node, not a full scan).
_NODES = """WITH RECURSIVE
    r(node) AS (SELECT min(node) FROM audit_record
        UNION ALL SELECT (SELECT min(node) FROM audit_record WHERE node > r.node)
        FROM r WHERE r.node IS NOT NULL),
    c(node) AS (SELECT min(node) FROM audit_checkpoint
        UNION ALL SELECT (SELECT min(node) FROM audit_checkpoint WHERE node > c.node)
        FROM c WHERE c.node IS NOT NULL)
    SELECT node FROM r WHERE node IS NOT NULL
    UNION SELECT node FROM c WHERE node IS NOT NULL
    ORDER BY node"""
_NODE_RECORDS = """WITH RECURSIVE
    r(node) AS (SELECT min(node) FROM audit_record
        UNION ALL SELECT (SELECT min(node) FROM audit_record WHERE node > r.node)
        FROM r WHERE r.node IS NOT NULL)
    SELECT node FROM r WHERE node IS NOT NULL"""
_CHECKPOINTS = f"SELECT {CHECKPOINT_COLUMN_LIST} FROM audit_checkpoint"
_FIRST = "SELECT seq, prev_hash FROM audit_record WHERE node = ? ORDER BY seq LIMIT 1"
# The first record at or after the cutoff; the head when every record is older.
_KEEP_FROM = """SELECT coalesce(
    (SELECT min(seq) FROM audit_record WHERE node = ? AND at_us >= ?),
    (SELECT max(seq) FROM audit_record WHERE node = ?))"""
# The index rows of the records about to be pruned, found from their subjects (a PRIMARY
# KEY probe each; the key function is registered on the writer connection).
_DELETE_SUBJECTS = tuple(
    f"""DELETE FROM {table} WHERE (subject_key, node, seq) IN (
    SELECT audit_subject_key(j.value), r.node, r.seq
    FROM audit_record AS r, json_each(r.subjects) AS j
    WHERE r.node = ? AND r.seq >= ? AND r.seq < ?)"""
    for table in ("audit_subject_recent", "audit_subject")  # as PostgreSQL (its race)
)
_DELETE_RECORDS = "DELETE FROM audit_record WHERE node = ? AND seq >= ? AND seq < ?"


class SQLiteAuditStore:
    """AuditStore over state_dir/audit.sqlite (see the module docstring for why)."""

    def __init__(
        self, path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS, *, read_only: bool = False
    ) -> None:
        self.path = path
        self.read_only = read_only
        self._writer: sqlite3.Connection | None = None
        self._recent = 0  # subject rows this store put into the recent tier since a merge
        self._moving: int | None = None  # the next range of the move under way, if any
        if read_only and not path.is_file():
            raise AuditTrailMissingError(f"no audit trail at {path}: no such file")
        self._db = SQLiteFile(
            path, what="audit store", busy_timeout_ms=busy_timeout_ms, read_only=read_only
        )
        try:
            if read_only:
                self._check_schema()
            else:
                self._writer = self._db.writer("FULL")
                self._writer.create_function(
                    "audit_subject_key", 1, subject_key, deterministic=True
                )
                self._db.migrate(self._writer, SQLITE_LINE)
        except BaseException:
            self.close()
            raise

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction on the writer connection (BEGIN IMMEDIATE)."""
        self._db.check_open()
        if self._writer is None:
            raise RuntimeError(f"audit store {self.path} is open read-only")
        return self._db.write(self._writer)

    def _check_schema(self) -> None:
        """For a read-only open: the file holds an audit trail this code reads as it is."""
        current = self._db.applied_version(SQLITE_LINE)
        if current is None:
            raise AuditTrailMissingError(
                f"no audit trail at {self.path}: the file holds no audit tables"
            )
        check_readable(SQLITE_LINE, current, str(self.path))

    def append_batch(self, records: Sequence[AuditRecord]) -> None:
        check_batch(records)
        if not records:
            return
        rows = [to_row(r) for r in records]
        subjects = subject_rows(records)
        first = records[0]
        with self._write() as conn:
            if first.seq > 1:
                found = conn.execute(_HASH_AT, (first.node, first.seq - 1)).fetchone()
                follows = found is not None and found[0] == first.prev_hash
            else:
                follows = first.prev_hash == GENESIS
            if not follows:
                raise ChainConflictError(
                    f"audit batch {first.record_id}: does not follow the stored head of "
                    f"node {first.node!r}"
                )
            for i, row in enumerate(rows):
                try:
                    inserted = conn.execute(_INSERT, row).rowcount
                except sqlite3.IntegrityError as exc:  # (node, seq) taken: not a replay
                    raise ChainConflictError(
                        f"audit record {records[i].record_id} is stored already"
                    ) from exc
                if inserted != 1:
                    raise replay_error(records, i)  # rolls the whole batch back
            if subjects:
                conn.executemany(_INSERT_SUBJECT, subjects)
            moving = self._moving
            if moving is None and self._recent + len(subjects) >= MERGE_ROWS:
                moving = 0
            if moving is not None:
                self._move_range(conn, moving)
        self._recent = 0 if moving == 0 else self._recent + len(subjects)
        self._moving = None if moving is None or moving + 1 >= MERGE_RANGES else moving + 1

    def _move_range(self, conn: sqlite3.Connection, index: int) -> None:
        """Move range `index` of the subject index's recent tier into the large one
        (migration 4), at the end of the records' transaction: no commit (no fsync) of
        its own. Under a savepoint, so that a failure here rolls the move back alone and
        loses nothing (the rows stay where they are, searched all the same, and are moved
        by a later move) and the records commit. A row is in one tier at any time."""
        low, high = key_ranges(MERGE_RANGES)[index]
        conn.execute("SAVEPOINT move_subjects")
        try:
            for statement in _MERGE:
                conn.execute(statement, (low, high))
        except sqlite3.Error:  # the records are what matters: never fail them for this
            conn.execute("ROLLBACK TO move_subjects")
            log.warning("audit store %s: the subject index's recent tier was not moved", self.path)
        conn.execute("RELEASE move_subjects")

    def append_checkpoint(self, cp: Checkpoint) -> None:
        with self._write() as conn:
            conn.execute(_INSERT_CHECKPOINT, checkpoint_row(cp))

    def head(self, node: str) -> tuple[int, str]:
        with self._db.read() as conn:
            row = conn.execute(_HEAD, (node,)).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def records(
        self, node: str | None = None, after_seq: int = 0, batch: int = STREAM_BATCH
    ) -> Iterator[AuditRecord]:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        names = [node] if node is not None else self._record_nodes()
        for name in names:
            last = after_seq
            while True:
                with self._db.read() as conn:
                    rows = conn.execute(_STREAM, (name, last, batch)).fetchall()
                for row in rows:
                    yield from_row(row)
                if len(rows) < batch:
                    break
                last = rows[-1][1]

    def record_rows(self, node: str) -> Iterator[tuple[Any, ...]]:
        with self._db.read() as conn:
            yield from conn.execute(_ROWS, (node,))

    def _record_nodes(self) -> list[str]:
        with self._db.read() as conn:
            return [r[0] for r in conn.execute(_NODE_RECORDS).fetchall()]

    def checkpoints(self, node: str | None = None) -> list[Checkpoint]:
        with self._db.read() as conn:
            if node is None:
                rows = conn.execute(_CHECKPOINTS + " ORDER BY node, id").fetchall()
            else:
                rows = conn.execute(
                    _CHECKPOINTS + " WHERE node = ? ORDER BY id", (node,)
                ).fetchall()
        return [checkpoint_from_row(r) for r in rows]

    def tree_start(self, node: str) -> int:
        with self._db.read() as conn:
            row = conn.execute(_TREE_START, (node, node)).fetchone()
        return 1 if row is None else int(row[0])

    def covering(self, node: str, seq: int) -> Checkpoint | None:
        with self._db.read() as conn:
            row = conn.execute(_COVERING, (node, seq)).fetchone()
        return covering_of(row, seq)

    def count_calls_since(self, requester: str, at_us: int) -> int:
        with self._db.read() as conn:
            row = conn.execute(_COUNT_SINCE, (requester, at_us)).fetchone()
        return int(row[0]) if row else 0

    def nodes(self) -> list[str]:
        with self._db.read() as conn:
            return [r[0] for r in conn.execute(_NODES).fetchall()]

    def query(
        self, q: Query, page_size: int, page_token: str = ""
    ) -> tuple[list[AuditRecord], str]:
        after = check_page(page_size, page_token)
        if q.nodes is not None and not q.nodes:
            return [], ""
        sql, params = query_sql(q, after, page_size + 1, SQLITE_HAS_SUBJECT)
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return page_of([from_row(r) for r in rows], page_size)

    def prune_before(self, at_us: int, node: str) -> tuple[int, int, str]:
        with self._db.read() as conn:
            (keep,) = conn.execute(_KEEP_FROM, (node, at_us, node)).fetchone()
        if keep is None:
            return 0, 0, GENESIS
        deleted = 0
        while True:  # oldest first, a chunk per transaction: the chain stays contiguous
            with self._write() as conn:
                start, prev_hash = conn.execute(_FIRST, (node,)).fetchone()
                if start >= keep:
                    return deleted, int(start), str(prev_hash)
                end = min(keep, start + PRUNE_CHUNK)
                conn.execute("INSERT INTO audit_pruning (active) VALUES (1)")
                for statement in _DELETE_SUBJECTS:
                    conn.execute(statement, (node, start, end))
                deleted += conn.execute(_DELETE_RECORDS, (node, start, end)).rowcount
                conn.execute("DELETE FROM audit_pruning")

    def close(self) -> None:
        """Close every connection (a WAL checkpoint runs when the last one closes)."""
        self._db.close()


def key_ranges(count: int) -> list[tuple[int, int]]:
    """The subject keys' span (signed 64-bit) cut into `count` inclusive ranges."""
    low, span = -(1 << 63), 1 << 64
    bounds = [low + span * i // count for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]
