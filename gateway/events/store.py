"""Where the event log and the subscriptions are kept: one interface, an SQLite and a
PostgreSQL backend.

Gateway replicas on one PostgreSQL share one log: each reads the same sources and offers
what it read with `append`, which takes the log's write lock (an advisory lock on
PostgreSQL, the file's on SQLite), skips events the log holds already (by source and
source sequence) and gives the rest the next positions. Two replicas offering the same
events store them once; positions are assigned and committed in order, so a reader never
sees position N+1 before N (gateway/events/model.py).

Subscribers' cursors (`acknowledge`) are in the same store: a subscriber resumes at
whichever replica it reaches. The tables and their migrations are
gateway/events/migrations.py; this module adds the interface the services code against
and `open_event_store`, the one module importing the backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from gateway.events.model import ActionChange, Bounds, NewEvent, Page, StoredEvent, Subscription
from gateway.pipeline.due_process import ProposedAction

__all__ = ["FILE_NAME", "EventStore", "open_event_store"]

FILE_NAME = "events.sqlite"


class EventStore(Protocol):
    """The event log and the subscriptions, shared by the gateway's processes."""

    # -- the log ------------------------------------------------------------------------

    def heads(self) -> dict[str, int]:
        """The highest source sequence the log holds, per source (absent: none yet). A
        prune keeps it: the next event of a source is its head + 1 even when the events
        before it are gone."""
        ...

    def append(
        self, events: Sequence[NewEvent], now_us: int, actions: Sequence[ActionChange] = ()
    ) -> int:
        """Add the events the log lacks, in the order given, at the next positions, in one
        transaction under the log's write lock; an event whose (source, source_seq) is
        there already is skipped, as is one at or below its source's head (held before a
        prune). `now_us` is their `ingested_us`. Returns how many were added. ValueError,
        nothing added, if an event would leave a gap in its source's sequence (its seq is
        not the source's head + 1 once the earlier ones are in) or reuses an event id under
        another (source, seq). Each of `actions` whose event was added is applied in the
        same transaction (model.ActionChange)."""
        ...

    def bounds(self) -> Bounds:
        """The floor (positions at or below it are gone or never were) and the head."""
        ...

    def page(
        self,
        after: int,
        *,
        through: int,
        types: Sequence[str],
        subscription_id: str | None,
        limit: int,
    ) -> Page:
        """The events in (after, through] of one of `types` (about one of the
        subscription's subjects, when `subscription_id` names a restricted one), in
        position order, at most `limit`. The page's cursor is the last event's position
        when `limit` events came, else `through`; its head is the log's head. A `through`
        beyond the head is read as the head (a cursor must never pass an event not yet
        committed); no `types`, no events. KeyError for an unknown `subscription_id`;
        ValueError for a limit below 1 or `through` below `after`."""
        ...

    def event(self, event_id: str) -> StoredEvent | None:
        """One event by id (corrections look up what they undo)."""
        ...

    def prune(self, before_us: int) -> int:
        """Remove events received (`ingested_us`) before `before_us`, raising the floor to
        the highest position removed. Returns how many went."""
        ...

    # -- proposed actions (due process) --------------------------------------------------

    def holding(
        self, households: Sequence[str], programme: str | None = None
    ) -> dict[tuple[str, str], ProposedAction]:
        """Per (household, programme), the newest action holding the household's benefit
        (due_process.HOLDING), for the households given (and the one programme, if named)."""
        ...

    def actions(
        self, states: Sequence[str], limit: int, after: tuple[int, str] | None = None
    ) -> list[ProposedAction]:
        """Actions in one of `states`, oldest proposed first (ties by id), at most `limit`,
        after the (proposed_us, action_id) `after` when given: a reader pages through all."""
        ...

    def unrecorded(self, limit: int, stale_before_us: int = 0) -> list[ProposedAction]:
        """Waiting actions whose audit record is not written yet (nor claimed since
        `stale_before_us`), oldest first, at most `limit`."""
        ...

    def claim_record(self, action_id: str, seen: str, claim: str, now_us: int) -> bool:
        """Mark the action's record as being written by this sweep (`claim`), if its
        record_id is still `seen` (as `unrecorded` read it): False if another took it."""
        ...

    def action(self, action_id: str) -> ProposedAction | None: ...

    def record_action(
        self,
        action_id: str,
        record_id: str,
        *,
        claim: str = "",
        notice_until_us: int | None = None,
    ) -> bool:
        """Note the action's audit record where its record_id is still `claim` ('' by
        default: none yet), and its notice's end if given (the notice runs from when the
        household can see the action); False if it was not."""
        ...

    def settle(
        self,
        action: ProposedAction,
        expected: str,
        event_of: Callable[[int], NewEvent] | None,
        source: str,
        now_us: int,
    ) -> bool:
        """Move the action to `action`'s state, resolution and time if it is still in
        `expected`, and append `event_of(seq)` (seq: the next of `source`) in the same
        transaction under the log's write lock. False, nothing written, if another
        replica moved it first."""
        ...

    # -- subscriptions -------------------------------------------------------------------

    def create_subscription(
        self, subscription: Subscription, subjects: Sequence[tuple[str, str]]
    ) -> None:
        """Store a new subscription and its subjects ((kind, value), kind "p" or "h"), in
        one transaction. ValueError if its id is taken, if `subscription.subjects` is not
        the number of distinct subjects, or a kind, value or type cannot be stored."""
        ...

    def subscription(self, subscription_id: str) -> Subscription | None:
        """The subscription (cancelled ones included), or None if there is none."""
        ...

    def acknowledge(self, subscription_id: str, cursor: int) -> int:
        """Raise the subscription's acknowledged cursor to `cursor` (never lower it).
        Returns the acknowledged cursor after the call. KeyError for an unknown id (a
        -1 could be taken for a cursor)."""
        ...

    def cancel(self, subscription_id: str, now_us: int) -> Subscription | None:
        """Mark the subscription cancelled (once; a second cancel keeps the first time).
        Returns it as stored after the call, None if there is none with that id."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


def open_event_store(database_url: str | None, state_dir: Path) -> EventStore:
    """PostgreSQL when `database_url` is a postgresql:// URL (replicas share it), else the
    SQLite file state_dir/events.sqlite. Migrates the schema before returning; raises
    ValueError for another URL scheme."""
    if database_url and database_url.startswith(("postgresql://", "postgres://")):
        # Imported here so that an embedded gateway never loads the PostgreSQL driver.
        from gateway.events.store_postgres import PostgresEventStore  # noqa: PLC0415

        return PostgresEventStore(database_url)
    if database_url:
        scheme = database_url.split(":", 1)[0]
        raise ValueError(f"unsupported event database URL scheme: {scheme!r}")
    from gateway.events.store_sqlite import SQLiteEventStore  # noqa: PLC0415

    return SQLiteEventStore(state_dir / FILE_NAME)
