"""The event log's values and rules, pure: what an event and a subscription are, which
cursors a subscriber may start from, and the reconciliation digest.

The log gives every event a *position* (the cursor) in the order the gateway received
it, whatever its source; a subscriber reads positions after its cursor. Positions are
assigned under the log's write lock (gateway/events/store_*.py), so a reader that has
seen position N has seen every position below N: a cursor never skips an event committed
late.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from gateway.base.errors import ExchangeError, Reason
from gateway.base.event_digest import Digest, digests
from gateway.pipeline.due_process import ProposedAction

__all__ = [
    "ActionChange",
    "Bounds",
    "Digest",
    "NewEvent",
    "NumberTakenError",
    "Page",
    "StaleActionError",
    "StoredEvent",
    "Subscription",
    "check_cursor",
    "digests",
    "new_subscription_id",
    "out_of_range",
]

# The gateway's own sources (gateway/events/actions.py says why two).
DERIVED = "JISR"
SWEPT = "JISR-DUE"
DERIVED_SOURCES = frozenset({DERIVED, SWEPT})

# Person ("p") or household ("h"): how a subscription's subjects are stored.
PERSON = "p"
HOUSEHOLD = "h"
MAX_SUBJECTS = 10_000


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as a source recorded it, ready to enter the log.

    `payload`: the serialized jisr.v1.ChangeEvent partners may see (bands, never scores);
    `detail`: JSON of what the source replaced and put (scores included), for the
    gateway's own reasoning, never sent."""

    source: str
    source_seq: int
    event_id: str
    type: str
    idcs: str
    household_id: str
    recorded_us: int
    payload: bytes
    detail: str = "{}"
    # A derived event: the (source, seq) of the change it follows from. It enters the log
    # only with that change, in the same call: a replica that finds the change held
    # already derived nothing more from it (the one that added it derived its events).
    cause: tuple[str, int] | None = None


class NumberTakenError(ValueError):
    """A derived event's number is held by another event: a replica numbered its own
    derived events from the same head at the same time. The append is rolled back; the
    ingester numbers again from the new head on its next round."""


class StaleActionError(ValueError):
    """An action change's expected state was no longer the stored one (another process
    moved the action since it was read): the whole append is rolled back, so that no event
    contradicts the action's state; the ingester derives again from fresh state."""


@dataclass(frozen=True, slots=True)
class ActionChange:
    """A proposed action written with the event that proposes, withdraws or settles it
    (its source and sequence): only if that event enters the log, so that replicas
    offering the same events change the action once. `expected` None inserts the action;
    a state moves it from that state only: if it is in another by then, the append fails
    with StaleActionError and writes nothing."""

    source: str
    source_seq: int
    action: ProposedAction
    expected: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event in the log, at its position."""

    position: int
    source: str
    source_seq: int
    event_id: str
    type: str
    idcs: str
    household_id: str
    recorded_us: int
    ingested_us: int
    payload: bytes
    detail: str


@dataclass(frozen=True, slots=True)
class Subscription:
    """A durable subscription: who, for what purpose, which types, from where.

    `subjects` is the number of subjects it is restricted to (0: all); the subjects
    themselves stay in the store."""

    subscription_id: str
    institution: str
    purpose: str
    types: tuple[str, ...]
    subjects: int
    start_cursor: int
    acknowledged: int
    created_us: int
    cancelled_us: int | None = None

    @property
    def active(self) -> bool:
        return self.cancelled_us is None


@dataclass(frozen=True, slots=True)
class Bounds:
    """The cursors the log can serve: after `floor` (events at or below it were pruned,
    or never existed) up to `head` (the newest position)."""

    floor: int
    head: int


@dataclass(frozen=True, slots=True)
class Page:
    """One read of a subscription's events: those in (after, cursor], in order."""

    after: int
    cursor: int
    head: int
    events: list[StoredEvent] = field(default_factory=list)


def new_subscription_id() -> str:
    return "sub-" + secrets.token_hex(8)


def out_of_range(message: str, bounds: Bounds) -> ExchangeError:
    """OUT_OF_RANGE with the oldest cursor a subscriber may start from."""
    return ExchangeError(
        Reason.CURSOR_OUT_OF_RANGE,
        message,
        metadata={"oldest_cursor": str(bounds.floor), "head_cursor": str(bounds.head)},
    )


def check_cursor(after: int, bounds: Bounds) -> None:
    """A subscriber may read after any cursor from the floor to the head: below the
    floor it would miss pruned events, beyond the head it names events that do not exist."""
    if after > bounds.head:
        raise out_of_range("the cursor is beyond the log's head", bounds)
    if after < bounds.floor:
        raise out_of_range(
            "the cursor is older than the retention window: events after it were pruned",
            bounds,
        )
