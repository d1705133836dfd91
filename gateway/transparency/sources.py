"""A month's indicators read from the gateway's stores: the audit trail, the contest
cases and the event log (due process). The stores are opened by the caller (read-only for
the trail); this module only pages through them and hands the values to the pure counts
of gateway/transparency/indicators.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from consent.store import ConsentStore
from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditStore
from gateway.audit.store_common import Query
from gateway.contests.store import ContestStore
from gateway.events.store import EventStore
from gateway.pipeline import due_process
from gateway.pipeline.due_process import ProposedAction
from gateway.transparency import indicators
from gateway.transparency.indicators import Counts, Durations, Month

PAGE = 1_000
MONTH_FORMAT = "YYYY-MM"


def month_of(text: str) -> Month:
    """The calendar month (UTC) named "YYYY-MM"; ValueError naming the format otherwise."""
    try:
        first = dt.datetime.strptime(text, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a month {MONTH_FORMAT}") from None
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return Month(text, _us(first), _us(following))


def _us(when: dt.datetime) -> int:
    return int(when.timestamp()) * 1_000_000


@dataclass(frozen=True, slots=True)
class Indicators:
    """A month's counts and durations, before disclosure control."""

    counts: list[Counts]
    durations: list[Durations]


Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores a month is counted from (opened by the caller)."""

    audit: AuditStore
    consents: ConsentStore
    contests: ContestStore
    events: EventStore


def read(month: Month, stores: Stores, progress: Progress = lambda _: None) -> Indicators:
    """Count the month from the stores."""
    audit, contests, events = stores.audit, stores.contests, stores.events
    records = list(_records(audit, month, progress))
    exchanges = indicators.exchanges(records, month)
    start_s, end_s = month.start_us // 1_000_000, month.end_us // 1_000_000
    consents = indicators.consents(
        stores.consents.revisions_between(start_s, end_s),
        stores.consents.expiring_between(start_s, end_s),
        records,
        month,
    )
    steps = contests.steps_between(month.start_us, month.end_us)
    progress(f"contest steps: {len(steps):,}")
    actions = list(_actions(events))
    progress(f"proposed actions: {len(actions):,}")
    return Indicators(
        counts=[
            exchanges,
            consents,
            indicators.contest_steps(((i, s) for i, _, s in steps), month),
            indicators.due_process(actions, month),
        ],
        durations=[
            indicators.answer_days(((i, s, o) for i, o, s in steps), month),
            indicators.death_to_end_days(_deaths(actions, events, month), month),
        ],
    )


def _records(audit: AuditStore, month: Month, progress: Progress) -> Iterator[AuditRecord]:
    token, seen = "", 0
    query = Query(since_us=month.start_us, until_us=month.end_us)
    while True:
        page, token = audit.query(query, PAGE, token)
        yield from page
        seen += len(page)
        if seen and seen % 100_000 < PAGE:
            progress(f"audit records read: {seen:,}")
        if not token:
            progress(f"audit records read: {seen:,}")
            return


def _actions(events: EventStore) -> Iterator[ProposedAction]:
    after: tuple[int, str] | None = None
    while True:
        page = events.actions(due_process.STATES, PAGE, after)
        yield from page
        if len(page) < PAGE:
            return
        after = (page[-1].proposed_us, page[-1].action_id)


def _deaths(
    actions: list[ProposedAction], events: EventStore, month: Month
) -> Iterator[tuple[ProposedAction, int]]:
    """Actions carried out in the month for want of a living member, with the time the
    death (their cause) was registered, where the log still holds it."""
    for action in actions:
        if action.state != due_process.CONFIRMED or not month.holds(action.resolved_us):
            continue
        if due_process.NO_LIVING_MEMBER not in action.reasons:
            continue
        cause = events.event(action.cause)
        if cause is not None and cause.type == "person.died":
            yield action, cause.recorded_us
