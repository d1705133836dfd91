"""The shared event store: PostgreSQL, when several gateway replicas share one log.

Connections come from gateway/storage/postgres.py's `StorePool` (autocommit, failing fast
while the database is down). Every replica reads the same sources and offers what it read
to `append`, which first takes a transaction-scoped advisory lock (one per schema): under
it the transaction reads the source heads and the log's head, skips what the log holds and
numbers the rest head + 1, + 2... The lock is released only once the transaction is
visible, so positions become visible in order: a reader's snapshot that holds position N+1
holds N. (A sequence would not do: it numbers at insert, and a transaction numbered
earlier may commit later, after a reader moved its cursor past the hole.)

Reads need no lock. `bounds` reads the floor and the highest position in one statement
(one snapshot); `page` reads the head first and never past it, so each of its statements
sees every position up to it, committed already; `prune` deletes and raises the floor in
one statement.

Tables live in the connection's current schema (the URL's
`options=-csearch_path%3D<schema>`), with their versions in `event_schema_migrations`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg import Cursor, errors

from gateway.events.migrations import (
    ACTION_COLUMNS,
    ACTION_LIST,
    EVENT_LIST,
    POSTGRES_LINE,
    SUBSCRIPTION_COLUMNS,
    SUBSCRIPTION_LIST,
    action_from_row,
    action_row,
    check_held,
    check_limit,
    check_page,
    duplicate_event_id,
    event_from_row,
    latest_holding,
    positioned,
    read_page,
    skipped_derived,
    subscription_from_row,
    subscription_rows,
)
from gateway.events.model import (
    ActionChange,
    Bounds,
    NewEvent,
    Page,
    StaleActionError,
    StoredEvent,
    Subscription,
)
from gateway.pipeline.due_process import HOLDING, ProposedAction
from gateway.storage.postgres import (
    LOCK,
    OPEN_TIMEOUT_S,
    POOL_MAX,
    POOL_MIN,
    POOL_TIMEOUT_S,
    StorePool,
)

_EVENT_ID_KEY = "event_log_event_id_key"  # PostgreSQL's name for UNIQUE (event_id)

_HEADS = "SELECT source, head FROM event_source"
_SET_HEAD = """INSERT INTO event_source (source, head) VALUES (%s, %s)
    ON CONFLICT (source) DO UPDATE SET head = excluded.head"""
# One statement, so one snapshot: a prune committing between two reads could otherwise
# pair the old floor with the emptied log and hand out pruned positions again.
_BOUNDS = """SELECT floor, greatest(floor, coalesce((SELECT max(position) FROM event_log), 0))
    FROM event_log_meta"""
# COPY: a batch of 5,000 events is one stream, several times faster than as many INSERTs.
_COPY = f"COPY event_log ({EVENT_LIST}) FROM STDIN"
_EVENT = f"SELECT {EVENT_LIST} FROM event_log WHERE event_id = %s"
_PRUNE = """WITH gone AS (DELETE FROM event_log WHERE ingested_us < %s RETURNING position),
    raised AS (UPDATE event_log_meta SET floor = greatest(floor, (SELECT max(position) FROM gone)))
    SELECT count(*) FROM gone"""
_SUBJECTS = "SELECT subjects FROM event_subscription WHERE subscription_id = %s"
_HEAD_OF = "SELECT head FROM event_source WHERE source = %s"
_HELD = """SELECT e.source, e.source_seq, e.event_id FROM event_log e
    JOIN unnest(%s::text[], %s::bigint[]) AS k(source, seq)
    ON e.source = k.source AND e.source_seq = k.seq"""

_ADD_ACTION = f"""INSERT INTO proposed_action ({ACTION_LIST})
    VALUES ({", ".join("%s" for _ in ACTION_COLUMNS)}) ON CONFLICT (action_id) DO NOTHING"""
_MOVE_ACTION = """UPDATE proposed_action SET state = %s, resolution = %s, resolved_us = %s
    WHERE action_id = %s AND state = %s"""
_ACTION = f"SELECT {ACTION_LIST} FROM proposed_action WHERE action_id = %s"
_RECORD_ACTION = """UPDATE proposed_action
    SET record_id = %s, notice_until_us = coalesce(%s::bigint, notice_until_us)
    WHERE action_id = %s AND record_id = %s"""
_CLAIM_RECORD = """UPDATE proposed_action SET record_id = %s, claimed_us = %s
    WHERE action_id = %s AND record_id = %s"""
_UNRECORDED = f"""SELECT {ACTION_LIST} FROM proposed_action
    WHERE state IN ('pending', 'contested')
    AND (record_id = '' OR (record_id LIKE 'claim:%%' AND claimed_us < %s))
    ORDER BY proposed_us, action_id LIMIT %s"""
_ACTIONS = f"""SELECT {ACTION_LIST} FROM proposed_action WHERE state = ANY(%s)
    AND (proposed_us, action_id) > (%s, %s) ORDER BY proposed_us, action_id LIMIT %s"""
_HOLDING = f"""SELECT {ACTION_LIST} FROM proposed_action
    WHERE household_id = ANY(%(households)s) AND state = ANY(%(states)s)
    AND (%(programme)s::text IS NULL OR programme = %(programme)s)"""

_CREATE = f"""INSERT INTO event_subscription ({SUBSCRIPTION_LIST})
    VALUES ({", ".join("%s" for _ in SUBSCRIPTION_COLUMNS)})
    ON CONFLICT (subscription_id) DO NOTHING"""
_ADD_SUBJECT = """INSERT INTO event_subscription_subject (subscription_id, kind, value)
    VALUES (%s, %s, %s)"""
_SUBSCRIPTION = f"SELECT {SUBSCRIPTION_LIST} FROM event_subscription WHERE subscription_id = %s"
_ACKNOWLEDGE = """UPDATE event_subscription SET acknowledged = greatest(acknowledged, %s)
    WHERE subscription_id = %s RETURNING acknowledged"""
_CANCEL = f"""UPDATE event_subscription SET cancelled_us = coalesce(cancelled_us, %s)
    WHERE subscription_id = %s RETURNING {SUBSCRIPTION_LIST}"""

# A restricted subscription's events: about one of its households or persons ('' is no
# subject, and never a subscription's).
_ABOUT_SUBJECTS = """
            AND ((e.household_id <> '' AND EXISTS (SELECT 1 FROM event_subscription_subject s
                    WHERE s.subscription_id = %(subscription)s AND s.kind = 'h'
                    AND s.value = e.household_id))
                OR (e.idcs <> '' AND EXISTS (SELECT 1 FROM event_subscription_subject s
                    WHERE s.subscription_id = %(subscription)s AND s.kind = 'p'
                    AND s.value = e.idcs)))"""
# One window of a page (migrations.read_page): each type's first `need` positions in
# (low, high] come from the (type, position) index in order, read from the index alone;
# their merge keeps the first `need`, and only those rows are read. A single
# `type = ANY(...)` lets the planner sort every match of the range: a catch-up in pages
# would read the range once per page.
_PAGE = """SELECT {columns} FROM event_log WHERE position IN (
    SELECT p.position FROM unnest(%(types)s::text[]) AS t(type)
    CROSS JOIN LATERAL (SELECT e.position FROM event_log e
        WHERE e.type = t.type AND e.position > %(low)s AND e.position <= %(high)s{about}
        ORDER BY e.position LIMIT %(need)s) AS p
    ORDER BY p.position LIMIT %(need)s)
    ORDER BY position"""
_PAGE_ALL = _PAGE.format(columns=EVENT_LIST, about="")
_PAGE_RESTRICTED = _PAGE.format(columns=EVENT_LIST, about=_ABOUT_SUBJECTS)


def _insert(cur: Cursor[Any], events: Sequence[NewEvent], now_us: int) -> list[tuple[Any, ...]]:
    """Append under the lock the caller holds: the rows added."""
    heads = {str(s): int(h) for s, h in cur.execute(_HEADS).fetchall()}
    bounds = cur.execute(_BOUNDS).fetchone()
    assert bounds is not None  # the migration inserts the one row
    rows, changed = positioned(events, heads, int(bounds[1]), now_us)
    skipped = skipped_derived(events, rows)
    if skipped:
        check_held(skipped, _held(cur, list(skipped)))
    if not rows:
        return rows
    try:
        with cur.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)
    except errors.UniqueViolation as exc:
        if exc.diag.constraint_name == _EVENT_ID_KEY:
            raise duplicate_event_id(rows) from exc
        raise
    cur.executemany(_SET_HEAD, list(changed.items()))
    return rows


def _held(cur: Cursor[Any], keys: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The event ids the log holds at these (source, seq), where it holds one."""
    sources = [s for s, _ in keys]
    seqs = [q for _, q in keys]
    rows = cur.execute(_HELD, (sources, seqs)).fetchall()
    return {(str(s), int(q)): str(e) for s, q, e in rows}


def _apply(cur: Cursor[Any], change: ActionChange) -> None:
    """Insert the action, or move it from the expected state (StaleActionError if it is no
    longer in it: the caller's transaction is rolled back, nothing is appended)."""
    action = change.action
    if change.expected is None:
        cur.execute(_ADD_ACTION, action_row(action))
        return
    moved = cur.execute(
        _MOVE_ACTION,
        (action.state, action.resolution, action.resolved_us, action.action_id, change.expected),
    )
    if moved.rowcount != 1:
        raise StaleActionError(
            f"action {action.action_id} is no longer {change.expected}; nothing was appended"
        )


class PostgresEventStore:
    """EventStore over PostgreSQL (see the module docstring for the concurrency rules)."""

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
            name="jisr-events",
            what="event store",
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open_timeout=open_timeout,
        )
        try:
            self._pool.migrate(POSTGRES_LINE, docs="docs/events.md")
            self._append_key = self._pool.lock_key("jisr.event.append.")
        except BaseException:
            self._pool.close()
            raise

    # -- the log ------------------------------------------------------------------------

    def heads(self) -> dict[str, int]:
        return {str(s): int(h) for s, h in self._all(_HEADS, ())}

    def append(
        self, events: Sequence[NewEvent], now_us: int, actions: Sequence[ActionChange] = ()
    ) -> int:
        if not events:
            return 0
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(LOCK, (self._append_key,))
            rows = _insert(cur, events, now_us)
            added = {(row[1], row[2]) for row in rows}
            for change in actions:
                if (change.source, change.source_seq) in added:
                    _apply(cur, change)
        return len(rows)

    def bounds(self) -> Bounds:
        floor, head = self._all(_BOUNDS, ())[0]
        return Bounds(floor=int(floor), head=int(head))

    def page(
        self,
        after: int,
        *,
        through: int,
        types: Sequence[str],
        subscription_id: str | None,
        limit: int,
    ) -> Page:
        check_page(after, through, limit)
        wanted = list(dict.fromkeys(types))
        with self._pool.connection() as conn:
            restricted = False
            if subscription_id is not None:
                found = conn.execute(_SUBJECTS, (subscription_id,)).fetchone()
                if found is None:
                    raise KeyError(f"no subscription {subscription_id}")
                restricted = int(found[0]) > 0
            bounds = conn.execute(_BOUNDS).fetchone()
            assert bounds is not None
            head = int(bounds[1])
            through = max(after, min(through, head))
            sql = _PAGE_RESTRICTED if restricted else _PAGE_ALL

            def window(low: int, high: int, need: int) -> list[StoredEvent]:
                params = {
                    "types": wanted,
                    "low": low,
                    "high": high,
                    "need": need,
                    "subscription": subscription_id,
                }
                return [event_from_row(r) for r in conn.execute(sql, params)]

            events, cursor = read_page(window, after, through, limit) if wanted else ([], through)
        return Page(after=after, cursor=cursor, head=head, events=events)

    def event(self, event_id: str) -> StoredEvent | None:
        rows = self._all(_EVENT, (event_id,))
        return event_from_row(rows[0]) if rows else None

    def prune(self, before_us: int) -> int:
        return int(self._all(_PRUNE, (before_us,))[0][0])

    # -- proposed actions ----------------------------------------------------------------

    def holding(
        self, households: Sequence[str], programme: str | None = None
    ) -> dict[tuple[str, str], ProposedAction]:
        params = {
            "households": list(dict.fromkeys(households)),
            "states": list(HOLDING),
            "programme": programme,
        }
        with self._pool.connection() as conn:
            rows = conn.execute(_HOLDING, params).fetchall()
        return latest_holding(action_from_row(r) for r in rows)

    def actions(
        self, states: Sequence[str], limit: int, after: tuple[int, str] | None = None
    ) -> list[ProposedAction]:
        check_limit(limit)
        since = after or (-1, "")
        rows = self._all(_ACTIONS, (list(states), *since, limit))
        return [action_from_row(r) for r in rows]

    def unrecorded(self, limit: int, stale_before_us: int = 0) -> list[ProposedAction]:
        check_limit(limit)
        rows = self._all(_UNRECORDED, (stale_before_us, limit))
        return [action_from_row(r) for r in rows]

    def claim_record(self, action_id: str, seen: str, claim: str, now_us: int) -> bool:
        with self._pool.connection() as conn:
            moved = conn.execute(_CLAIM_RECORD, (claim, now_us, action_id, seen))
            return moved.rowcount == 1

    def action(self, action_id: str) -> ProposedAction | None:
        rows = self._all(_ACTION, (action_id,))
        return action_from_row(rows[0]) if rows else None

    def record_action(
        self,
        action_id: str,
        record_id: str,
        *,
        claim: str = "",
        notice_until_us: int | None = None,
    ) -> bool:
        params = (record_id, notice_until_us, action_id, claim)
        with self._pool.connection() as conn:
            return conn.execute(_RECORD_ACTION, params).rowcount == 1

    def settle(
        self,
        action: ProposedAction,
        expected: str,
        event_of: Callable[[int], NewEvent] | None,
        source: str,
        now_us: int,
    ) -> bool:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(LOCK, (self._append_key,))
            moved = cur.execute(
                _MOVE_ACTION,
                (action.state, action.resolution, action.resolved_us, action.action_id, expected),
            )
            if moved.rowcount != 1:
                return False
            if event_of is not None:
                row = cur.execute(_HEAD_OF, (source,)).fetchone()
                _insert(cur, [event_of((int(row[0]) if row else 0) + 1)], now_us)
        return True

    # -- subscriptions -------------------------------------------------------------------

    def create_subscription(
        self, subscription: Subscription, subjects: Sequence[tuple[str, str]]
    ) -> None:
        row, subject_rows = subscription_rows(subscription, subjects)
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if cur.execute(_CREATE, row).rowcount != 1:
                raise ValueError(f"subscription {subscription.subscription_id} exists already")
            if subject_rows:
                cur.executemany(_ADD_SUBJECT, subject_rows)

    def subscription(self, subscription_id: str) -> Subscription | None:
        rows = self._all(_SUBSCRIPTION, (subscription_id,))
        return subscription_from_row(rows[0]) if rows else None

    def acknowledge(self, subscription_id: str, cursor: int) -> int:
        rows = self._all(_ACKNOWLEDGE, (cursor, subscription_id))
        if not rows:
            raise KeyError(f"no subscription {subscription_id}")
        return int(rows[0][0])

    def cancel(self, subscription_id: str, now_us: int) -> Subscription | None:
        rows = self._all(_CANCEL, (now_us, subscription_id))
        return subscription_from_row(rows[0]) if rows else None

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self._pool.close()
