"""The shared audit store: PostgreSQL, for several gateway replicas at once.

Connections come from a small pool in autocommit mode. A batch of records is ONE statement
(a data-modifying CTE inserting the records and their subject index rows from arrays), so
a group commit costs one round trip and one commit whatever its size, and is atomic: if a
(requester, jti, part) is taken, the unique index aborts the statement and nothing of the
batch is stored. The statement also inserts nothing unless the batch follows the node's
stored head (its first record's predecessor is stored with the expected hash), so a chain
never forks or skips a seq even if two processes were given the same node name.

Each node has one writer, so appends need no lock across replicas: the only shared state
they touch is the replay index, and PostgreSQL serialises conflicting inserts on it (the
second waits for the first to commit, then fails).

Tables live in the connection's current schema: the URL's
`options=-csearch_path%3D<schema>` (passed through to libpq) picks it.

Opened `read_only` (the DPO's verify and export), the store runs no migration: a schema
without the audit tables is an error naming it, never a new empty trail.

Connections come from `gateway.storage.postgres.StorePool`, shared with the consent store:
short connect timeouts and quick reconnection, so that while the database is down a call
fails at once (but for one probing connection at a time) and the store serves again
within about a second of the database's return (the `AuditWriter` adds its own circuit
breaker on top: docs/audit-storage.md, "When the database is down").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from psycopg import Connection, errors
from psycopg.rows import TupleRow

from gateway.audit.migrations import POSTGRES_LINE
from gateway.audit.record import GENESIS, AuditRecord, Checkpoint
from gateway.audit.store_common import (
    CHECKPOINT_COLUMN_LIST,
    CHECKPOINT_COLUMNS,
    COLUMN_LIST,
    COVERING_SQL,
    MERGE_ROWS,
    POSTGRES_HAS_SUBJECT,
    PRUNE_CHUNK,
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
    first_replay,
    from_row,
    page_of,
    query_sql,
    replay_error,
    subject_rows,
    to_row,
)
from gateway.storage.postgres import (
    OPEN_TIMEOUT_S,
    POOL_MAX,
    POOL_MIN,
    POOL_TIMEOUT_S,
    StorePool,
    describe,
)

log = logging.getLogger("jisr.audit")

# Array types of the COLUMNS, in order, for unnest.
_TYPES = (
    "text",
    "bigint",
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "integer",
    "bigint",
    "text",
    "text",
)
# Sent in binary (%b): half the cost of text array literals, client and server side.
_ARRAYS = ", ".join(f"%b::{t}[]" for t in _TYPES)
# Inserted only when the batch follows the stored head: the first record is seq 1 with the
# genesis prev_hash, or its predecessor is stored with hash = its prev_hash.
_APPEND = f"""WITH ins AS (
        INSERT INTO audit_record ({COLUMN_LIST})
        SELECT * FROM unnest({_ARRAYS})
        WHERE %s OR EXISTS (SELECT 1 FROM audit_record
            WHERE node = %s AND seq = %s AND hash = %s)
        RETURNING seq),
    sub AS (
        INSERT INTO audit_subject_recent (subject_key, node, seq)
        SELECT * FROM unnest(%b::bigint[], %b::text[], %b::bigint[])
        WHERE EXISTS (SELECT 1 FROM ins))
    SELECT count(*) FROM ins"""
_TAKEN = """SELECT requester, jti, part FROM audit_record
    WHERE jti <> '' AND (requester, jti, part) IN
        (SELECT * FROM unnest(%s::text[], %s::text[], %s::integer[]))"""
_INSERT_CHECKPOINT = f"""INSERT INTO audit_checkpoint ({CHECKPOINT_COLUMN_LIST})
    VALUES ({", ".join("%s" for _ in CHECKPOINT_COLUMNS)})"""
_TREE_START = TREE_START_SQL.format(p="%s")
_COVERING = COVERING_SQL.format(p="%s")
# A call's own record (part 0), not its batches' or notifications', nor the gateway's own
# records of proposed actions (their `sub`): what an institution's daily quota counts.
_COUNT_SINCE = (
    "SELECT count(*) FROM audit_record WHERE requester = %s AND at_us >= %s"
    " AND part = 0 AND requester_sub <> 'jisr:due-process'"
)
_HEAD = "SELECT seq, hash FROM audit_record WHERE node = %s ORDER BY seq DESC LIMIT 1"
_STREAM = f"""SELECT {COLUMN_LIST} FROM audit_record WHERE node = %s AND seq > %s
    ORDER BY seq LIMIT %s"""
_ROWS = f"SELECT {COLUMN_LIST} FROM audit_record WHERE node = %s ORDER BY seq"
# Rows a server-side cursor sends per round trip while the verification reads a chain.
ROWS_PER_FETCH = 10_000
# Distinct values by skipping through an index (one probe per node, not a full scan).
_RECORD_NODES = """WITH RECURSIVE
    r(node) AS (SELECT min(node) FROM audit_record
        UNION ALL SELECT (SELECT min(node) FROM audit_record WHERE node > r.node)
        FROM r WHERE r.node IS NOT NULL)
    SELECT node FROM r WHERE node IS NOT NULL"""
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
_CHECKPOINTS = f"SELECT {CHECKPOINT_COLUMN_LIST} FROM audit_checkpoint"
_FIRST = "SELECT seq, prev_hash FROM audit_record WHERE node = %s ORDER BY seq LIMIT 1"
_KEEP_FROM = """SELECT coalesce(
    (SELECT min(seq) FROM audit_record WHERE node = %s AND at_us >= %s),
    (SELECT max(seq) FROM audit_record WHERE node = %s))"""
# The index rows of the records about to be pruned, found from their subjects.
_DELETE_SUBJECTS = tuple(
    f"""DELETE FROM {table} AS s
    USING audit_record AS r, json_array_elements_text(r.subjects::json) AS j(v)
    WHERE r.node = %s AND r.seq >= %s AND r.seq < %s
      AND s.subject_key = audit_subject_key(j.v) AND s.node = r.node AND s.seq = r.seq"""
    # The recent tier first: a move committed between the two statements then only takes
    # rows into the large tier before its statement's snapshot, which finds them there;
    # the other order would leave the rows it moved behind, for good.
    for table in ("audit_subject_recent", "audit_subject")
)
# The recent tier moved into the large one in one statement: rows another replica commits
# meanwhile are not in this snapshot, so they stay for the next move (migration 4).
_MERGE = """WITH moved AS (DELETE FROM audit_subject_recent RETURNING subject_key, node, seq)
    INSERT INTO audit_subject SELECT * FROM moved ORDER BY 1, 2, 3"""
_DELETE_RECORDS = "DELETE FROM audit_record WHERE node = %s AND seq >= %s AND seq < %s"


class PostgresAuditStore:
    """AuditStore over PostgreSQL (see the module docstring for the concurrency rules)."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = POOL_MIN,
        max_size: int = POOL_MAX,
        timeout: float = POOL_TIMEOUT_S,
        open_timeout: float = OPEN_TIMEOUT_S,
        read_only: bool = False,
    ) -> None:
        self.url = url
        self.read_only = read_only
        self._recent = 0  # subject rows this store put into the recent tier since a merge
        self._pool = StorePool(
            url,
            name="jisr-audit",
            what="audit store",
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open_timeout=open_timeout,
        )
        try:
            if read_only:
                self._check_schema()
            else:
                self._pool.migrate(POSTGRES_LINE, docs="docs/audit-storage.md")
        except BaseException:
            self._pool.close()
            raise

    def _check_schema(self) -> None:
        """For a read-only open: the schema holds an audit trail this code reads as it is."""
        where, current = self._pool.applied_version(POSTGRES_LINE)
        if current is None:
            raise AuditTrailMissingError(f"no audit trail at {where}: no audit tables")
        check_readable(POSTGRES_LINE, current, where)

    def _writable(self) -> None:
        """Write methods refuse on a read-only store: a reading tool never changes a trail."""
        if self.read_only:
            raise RuntimeError(f"audit store {describe(self.url)} is open read-only")

    def append_batch(self, records: Sequence[AuditRecord]) -> None:
        self._writable()
        check_batch(records)
        if not records:
            return
        columns = [list(c) for c in zip(*(to_row(r) for r in records), strict=True)]
        subjects = subject_rows(records)
        first = records[0]
        genesis = first.seq == 1 and first.prev_hash == GENESIS
        params = (
            *columns,
            genesis,
            first.node,
            first.seq - 1,
            first.prev_hash,
            [s[0] for s in subjects],
            [s[1] for s in subjects],
            [s[2] for s in subjects],
        )
        with self._pool.connection() as conn:
            try:
                row = conn.execute(_APPEND, params).fetchone()
            except errors.UniqueViolation as exc:
                if exc.diag.constraint_name != "audit_record_replay":  # (node, seq) taken
                    raise ChainConflictError(
                        f"audit batch {first.record_id}: seq stored already on node "
                        f"{first.node!r} ({exc.diag.constraint_name})"
                    ) from exc
                index = first_replay(records, self._taken(conn, records))
                if index < 0:  # the colliding record has gone since (pruned): retry later
                    raise
                raise replay_error(records, index) from exc
        if row is None or row[0] != len(records):
            raise ChainConflictError(
                f"audit batch {first.record_id}: does not follow the stored head of "
                f"node {first.node!r}"
            )
        self._recent += len(subjects)
        if self._recent >= MERGE_ROWS:
            self._merge_subjects()

    def _merge_subjects(self) -> None:
        """Move the subject index's recent tier into the large one (migration 4) after
        the records' own transaction: a failure loses nothing (the rows stay where they
        are, searched all the same) and is retried after more rows."""
        self._recent = 0
        try:
            with self._pool.connection() as conn:
                conn.execute(_MERGE)
        except Exception:  # the records are committed: never fail their append for this
            log.warning("audit store: the subject index's recent tier was not moved")

    @staticmethod
    def _taken(
        conn: Connection[TupleRow], records: Sequence[AuditRecord]
    ) -> set[tuple[str, str, int]]:
        """Which of the batch's (requester, jti, part) are stored already."""
        keyed = [r for r in records if r.jti]
        rows = conn.execute(
            _TAKEN,
            ([r.requester for r in keyed], [r.jti for r in keyed], [r.part for r in keyed]),
        ).fetchall()
        return {(str(a), str(b), int(c)) for a, b, c in rows}

    def append_checkpoint(self, cp: Checkpoint) -> None:
        self._writable()
        with self._pool.connection() as conn:
            conn.execute(_INSERT_CHECKPOINT, checkpoint_row(cp))

    def head(self, node: str) -> tuple[int, str]:
        with self._pool.connection() as conn:
            row = conn.execute(_HEAD, (node,)).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def records(
        self, node: str | None = None, after_seq: int = 0, batch: int = STREAM_BATCH
    ) -> Iterator[AuditRecord]:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        if node is None:
            with self._pool.connection() as conn:
                names = [str(r[0]) for r in conn.execute(_RECORD_NODES).fetchall()]
        else:
            names = [node]
        for name in names:
            last = after_seq
            while True:
                with self._pool.connection() as conn:
                    rows = conn.execute(_STREAM, (name, last, batch)).fetchall()
                for row in rows:
                    yield from_row(row)
                if len(rows) < batch:
                    break
                last = rows[-1][1]

    def record_rows(self, node: str) -> Iterator[tuple[Any, ...]]:
        with self._pool.connection() as conn, conn.transaction():
            cursor = conn.cursor(name="jisr_audit_rows")
            cursor.itersize = ROWS_PER_FETCH
            with cursor:
                yield from cursor.execute(_ROWS, (node,))

    def checkpoints(self, node: str | None = None) -> list[Checkpoint]:
        with self._pool.connection() as conn:
            if node is None:
                rows = conn.execute(_CHECKPOINTS + " ORDER BY node, id").fetchall()
            else:
                rows = conn.execute(
                    _CHECKPOINTS + " WHERE node = %s ORDER BY id", (node,)
                ).fetchall()
        return [checkpoint_from_row(r) for r in rows]

    def tree_start(self, node: str) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(_TREE_START, (node, node)).fetchone()
        return 1 if row is None else int(row[0])

    def covering(self, node: str, seq: int) -> Checkpoint | None:
        with self._pool.connection() as conn:
            row = conn.execute(_COVERING, (node, seq)).fetchone()
        return covering_of(row, seq)

    def count_calls_since(self, requester: str, at_us: int) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(_COUNT_SINCE, (requester, at_us)).fetchone()
        return int(row[0]) if row else 0

    def nodes(self) -> list[str]:
        with self._pool.connection() as conn:
            return [str(r[0]) for r in conn.execute(_NODES).fetchall()]

    def query(
        self, q: Query, page_size: int, page_token: str = ""
    ) -> tuple[list[AuditRecord], str]:
        after = check_page(page_size, page_token)
        if q.nodes is not None and not q.nodes:
            return [], ""
        sql, params = query_sql(q, after, page_size + 1, POSTGRES_HAS_SUBJECT)
        with self._pool.connection() as conn:
            rows = conn.execute(sql.replace("?", "%s"), params).fetchall()
        return page_of([from_row(r) for r in rows], page_size)

    def prune_before(self, at_us: int, node: str) -> tuple[int, int, str]:
        self._writable()
        with self._pool.connection() as conn:
            found = conn.execute(_KEEP_FROM, (node, at_us, node)).fetchone()
            keep = None if found is None else found[0]
            if keep is None:
                return 0, 0, GENESIS
            deleted = 0
            while True:  # oldest first, a chunk per transaction: the chain stays contiguous
                with conn.transaction():
                    first = conn.execute(_FIRST, (node,)).fetchone()
                    assert first is not None  # the head is never deleted
                    start, prev_hash = int(first[0]), str(first[1])
                    if start >= keep:
                        return deleted, start, prev_hash
                    end = min(keep, start + PRUNE_CHUNK)
                    conn.execute("SET LOCAL jisr.pruning = 'on'")
                    for statement in _DELETE_SUBJECTS:
                        conn.execute(statement, (node, start, end))
                    deleted += conn.execute(_DELETE_RECORDS, (node, start, end)).rowcount

    def close(self) -> None:
        self._pool.close()
