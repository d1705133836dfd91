"""The embedded event store: state_dir/events.sqlite in WAL mode, safe from many threads.

gateway/storage/sqlite.py makes it safe: pooled reader connections that never wait (WAL),
and writes serialised under one process lock in BEGIN IMMEDIATE transactions, which also
serialise writers of other processes: `append` reads the heads and assigns positions
inside that transaction, so positions are committed in order and a reader never sees
position N+1 without N (`page` reads the head first and never past it). One writer,
synchronous=FULL: an acknowledged cursor or an appended event must survive a power cut;
appends come in batches, so the fsync per commit is paid per batch, not per event.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.events.migrations import (
    ACTION_COLUMNS,
    ACTION_LIST,
    EVENT_COLUMNS,
    EVENT_LIST,
    SQLITE_LINE,
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
from gateway.storage.sqlite import BUSY_TIMEOUT_MS, SQLiteFile

_HEADS = "SELECT source, head FROM event_source"
_SET_HEAD = """INSERT INTO event_source (source, head) VALUES (?, ?)
    ON CONFLICT (source) DO UPDATE SET head = excluded.head"""
# One statement, so one snapshot: a prune committing between two reads could otherwise
# pair the old floor with the emptied log and hand out pruned positions again.
_BOUNDS = """SELECT floor, max(floor, coalesce((SELECT max(position) FROM event_log), 0))
    FROM event_log_meta"""
_INSERT = f"INSERT INTO event_log ({EVENT_LIST}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
_EVENT = f"SELECT {EVENT_LIST} FROM event_log WHERE event_id = ?"
_PRUNED = "SELECT count(*), max(position) FROM event_log WHERE ingested_us < ?"
_PRUNE = "DELETE FROM event_log WHERE ingested_us < ?"
_RAISE_FLOOR = "UPDATE event_log_meta SET floor = max(floor, ?)"
_SUBJECTS = "SELECT subjects FROM event_subscription WHERE subscription_id = ?"

_CREATE = f"""INSERT INTO event_subscription ({SUBSCRIPTION_LIST})
    VALUES ({", ".join("?" * len(SUBSCRIPTION_COLUMNS))})
    ON CONFLICT (subscription_id) DO NOTHING"""
_ADD_SUBJECT = """INSERT INTO event_subscription_subject (subscription_id, kind, value)
    VALUES (?, ?, ?)"""
_SUBSCRIPTION = f"SELECT {SUBSCRIPTION_LIST} FROM event_subscription WHERE subscription_id = ?"
_ACKNOWLEDGE = """UPDATE event_subscription SET acknowledged = max(acknowledged, ?)
    WHERE subscription_id = ? RETURNING acknowledged"""
_CANCEL = f"""UPDATE event_subscription SET cancelled_us = coalesce(cancelled_us, ?)
    WHERE subscription_id = ? RETURNING {SUBSCRIPTION_LIST}"""

_ADD_ACTION = f"""INSERT INTO proposed_action ({ACTION_LIST})
    VALUES ({", ".join("?" * len(ACTION_COLUMNS))}) ON CONFLICT (action_id) DO NOTHING"""
_MOVE_ACTION = """UPDATE proposed_action SET state = ?, resolution = ?, resolved_us = ?
    WHERE action_id = ? AND state = ?"""
_ACTION = f"SELECT {ACTION_LIST} FROM proposed_action WHERE action_id = ?"
_RECORD_ACTION = """UPDATE proposed_action
    SET record_id = ?, notice_until_us = coalesce(?, notice_until_us)
    WHERE action_id = ? AND record_id = ?"""
_CLAIM_RECORD = """UPDATE proposed_action SET record_id = ?, claimed_us = ?
    WHERE action_id = ? AND record_id = ?"""
_UNRECORDED = f"""SELECT {ACTION_LIST} FROM proposed_action
    WHERE state IN ('pending', 'contested')
    AND (record_id = '' OR (record_id LIKE 'claim:%' AND claimed_us < ?))
    ORDER BY proposed_us, action_id LIMIT ?"""


def _holding_sql(households: int, programme: bool) -> str:
    marks = ", ".join("?" * households)
    states = ", ".join("?" * len(HOLDING))
    one = " AND programme = ?" if programme else ""
    return f"""SELECT {ACTION_LIST} FROM proposed_action
        WHERE household_id IN ({marks}){one} AND state IN ({states})"""


# Households per query of `holding` (SQLite's limit of bound parameters is 32,766).
_HOLDING_CHUNK = 500

# A restricted subscription's events: about one of its households or persons (primary
# key lookups; '' is no subject, and never a subscription's).
_ABOUT_SUBJECTS = """
        AND ((e.household_id <> '' AND EXISTS (SELECT 1 FROM event_subscription_subject AS s
                WHERE s.subscription_id = ? AND s.kind = 'h' AND s.value = e.household_id))
            OR (e.idcs <> '' AND EXISTS (SELECT 1 FROM event_subscription_subject AS s
                WHERE s.subscription_id = ? AND s.kind = 'p' AND s.value = e.idcs)))"""


@functools.lru_cache(maxsize=64)
def _page_sql(types: int, restricted: bool) -> str:
    """One window of a page (migrations.read_page) for `types` distinct types: each
    type's first `need` positions in (low, high] come from the (type, position, ...)
    index in order, without a sort and without reading a row; their merge keeps the first
    `need`, and only those rows are read. A single `type IN (...)` would make SQLite sort
    every match of the range: a catch-up in pages would read the range once per page."""
    about = _ABOUT_SUBJECTS if restricted else ""
    one = f"""SELECT position FROM (SELECT e.position FROM event_log AS e
        WHERE e.type = ? AND e.position > ? AND e.position <= ?{about}
        ORDER BY e.position LIMIT ?)"""
    merged = " UNION ALL ".join([one] * types)
    return f"""SELECT {EVENT_LIST} FROM event_log WHERE position IN
        (SELECT position FROM ({merged}) ORDER BY position LIMIT ?)
        ORDER BY position"""


_HEAD_OF = "SELECT head FROM event_source WHERE source = ?"
_HELD = "SELECT event_id FROM event_log WHERE source = ? AND source_seq = ?"


def _held(conn: sqlite3.Connection, keys: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The event ids the log holds at these (source, seq), where it holds one."""
    found: dict[tuple[str, int], str] = {}
    for key in keys:
        row = conn.execute(_HELD, key).fetchone()
        if row is not None:
            found[key] = str(row[0])
    return found


def _apply(conn: sqlite3.Connection, change: ActionChange) -> None:
    """Insert the action, or move it from the expected state (StaleActionError if it is no
    longer in it: the caller's transaction is rolled back, nothing is appended)."""
    action = change.action
    if change.expected is None:
        conn.execute(_ADD_ACTION, action_row(action))
        return
    moved = conn.execute(
        _MOVE_ACTION,
        (action.state, action.resolution, action.resolved_us, action.action_id, change.expected),
    )
    if moved.rowcount != 1:
        raise StaleActionError(
            f"action {action.action_id} is no longer {change.expected}; nothing was appended"
        )


class SQLiteEventStore:
    """EventStore over one SQLite file (see the module docstring for why)."""

    def __init__(self, path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self._db = SQLiteFile(path, what="event store", busy_timeout_ms=busy_timeout_ms)
        try:
            self._writer = self._db.writer("FULL")
            self._db.migrate(self._writer, SQLITE_LINE)
        except BaseException:
            self.close()
            raise

    # -- the log ------------------------------------------------------------------------

    def heads(self) -> dict[str, int]:
        return {str(s): int(h) for s, h in self._select(_HEADS, ())}

    def append(
        self, events: Sequence[NewEvent], now_us: int, actions: Sequence[ActionChange] = ()
    ) -> int:
        if not events:
            return 0
        with self._db.write(self._writer) as conn:
            rows = self._insert(conn, events, now_us)
            added = {(row[1], row[2]) for row in rows}
            for change in actions:
                if (change.source, change.source_seq) in added:
                    _apply(conn, change)
        return len(rows)

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, events: Sequence[NewEvent], now_us: int
    ) -> list[tuple[Any, ...]]:
        heads = {str(s): int(h) for s, h in conn.execute(_HEADS).fetchall()}
        _, head = conn.execute(_BOUNDS).fetchone()
        rows, changed = positioned(events, heads, int(head), now_us)
        skipped = skipped_derived(events, rows)
        if skipped:
            check_held(skipped, _held(conn, list(skipped)))
        try:
            conn.executemany(_INSERT, rows)
        except sqlite3.IntegrityError as exc:
            if "event_id" in str(exc):
                raise duplicate_event_id(rows) from exc
            raise
        conn.executemany(_SET_HEAD, changed.items())
        return rows

    def bounds(self) -> Bounds:
        floor, head = self._select(_BOUNDS, ())[0]
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
        with self._db.read() as conn:
            restricted = False
            if subscription_id is not None:
                found = conn.execute(_SUBJECTS, (subscription_id,)).fetchone()
                if found is None:
                    raise KeyError(f"no subscription {subscription_id}")
                restricted = int(found[0]) > 0
            _, head = conn.execute(_BOUNDS).fetchone()
            through = max(after, min(through, int(head)))
            about = (subscription_id, subscription_id) if restricted else ()
            sql = _page_sql(len(wanted), restricted)

            def window(low: int, high: int, need: int) -> list[StoredEvent]:
                params: list[Any] = []
                for type_ in wanted:
                    params += [type_, low, high, *about, need]
                return [event_from_row(r) for r in conn.execute(sql, [*params, need])]

            events, cursor = read_page(window, after, through, limit) if wanted else ([], through)
        return Page(after=after, cursor=cursor, head=int(head), events=events)

    def event(self, event_id: str) -> StoredEvent | None:
        rows = self._select(_EVENT, (event_id,))
        return event_from_row(rows[0]) if rows else None

    def prune(self, before_us: int) -> int:
        with self._db.write(self._writer) as conn:
            count, highest = conn.execute(_PRUNED, (before_us,)).fetchone()
            if not count:
                return 0
            conn.execute(_PRUNE, (before_us,))
            conn.execute(_RAISE_FLOOR, (highest,))
        return int(count)

    # -- proposed actions ----------------------------------------------------------------

    def holding(
        self, households: Sequence[str], programme: str | None = None
    ) -> dict[tuple[str, str], ProposedAction]:
        wanted = list(dict.fromkeys(households))
        found: list[ProposedAction] = []
        with self._db.read() as conn:
            for start in range(0, len(wanted), _HOLDING_CHUNK):
                chunk = wanted[start : start + _HOLDING_CHUNK]
                params = [*chunk, *([programme] if programme is not None else []), *HOLDING]
                sql = _holding_sql(len(chunk), programme is not None)
                found += [action_from_row(r) for r in conn.execute(sql, params)]
        return latest_holding(found)

    def actions(
        self, states: Sequence[str], limit: int, after: tuple[int, str] | None = None
    ) -> list[ProposedAction]:
        check_limit(limit)
        marks = ", ".join("?" * len(states))
        sql = f"""SELECT {ACTION_LIST} FROM proposed_action WHERE state IN ({marks})
            AND (proposed_us, action_id) > (?, ?) ORDER BY proposed_us, action_id LIMIT ?"""
        since = after or (-1, "")
        return [action_from_row(r) for r in self._select(sql, (*states, *since, limit))]

    def unrecorded(self, limit: int, stale_before_us: int = 0) -> list[ProposedAction]:
        check_limit(limit)
        rows = self._select(_UNRECORDED, (stale_before_us, limit))
        return [action_from_row(r) for r in rows]

    def claim_record(self, action_id: str, seen: str, claim: str, now_us: int) -> bool:
        with self._db.write(self._writer) as conn:
            return conn.execute(_CLAIM_RECORD, (claim, now_us, action_id, seen)).rowcount == 1

    def action(self, action_id: str) -> ProposedAction | None:
        rows = self._select(_ACTION, (action_id,))
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
        with self._db.write(self._writer) as conn:
            return conn.execute(_RECORD_ACTION, params).rowcount == 1

    def settle(
        self,
        action: ProposedAction,
        expected: str,
        event_of: Callable[[int], NewEvent] | None,
        source: str,
        now_us: int,
    ) -> bool:
        with self._db.write(self._writer) as conn:
            moved = conn.execute(
                _MOVE_ACTION,
                (action.state, action.resolution, action.resolved_us, action.action_id, expected),
            )
            if moved.rowcount != 1:
                return False
            if event_of is not None:
                row = conn.execute(_HEAD_OF, (source,)).fetchone()
                self._insert(conn, [event_of((int(row[0]) if row else 0) + 1)], now_us)
        return True

    # -- subscriptions -------------------------------------------------------------------

    def create_subscription(
        self, subscription: Subscription, subjects: Sequence[tuple[str, str]]
    ) -> None:
        row, subject_rows = subscription_rows(subscription, subjects)
        with self._db.write(self._writer) as conn:
            if conn.execute(_CREATE, row).rowcount != 1:
                raise ValueError(f"subscription {subscription.subscription_id} exists already")
            conn.executemany(_ADD_SUBJECT, subject_rows)

    def subscription(self, subscription_id: str) -> Subscription | None:
        rows = self._select(_SUBSCRIPTION, (subscription_id,))
        return subscription_from_row(rows[0]) if rows else None

    def acknowledge(self, subscription_id: str, cursor: int) -> int:
        with self._db.write(self._writer) as conn:
            rows = conn.execute(_ACKNOWLEDGE, (cursor, subscription_id)).fetchall()
        if not rows:
            raise KeyError(f"no subscription {subscription_id}")
        return int(rows[0][0])

    def cancel(self, subscription_id: str, now_us: int) -> Subscription | None:
        with self._db.write(self._writer) as conn:
            rows = conn.execute(_CANCEL, (now_us, subscription_id)).fetchall()
        return subscription_from_row(rows[0]) if rows else None

    def _select(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._db.read() as conn:
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close every connection (a WAL checkpoint runs when the last one closes)."""
        self._db.close()
