"""A month's indicators read from the gateway's stores: the audit trail, the contest
cases and the event log (due process). The stores are opened by the caller (read-only for
the trail); this module only pages through them and hands the values to the pure counts
of gateway/transparency/indicators.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from adapters.registry_db import Registry
from consent.store import ConsentStore
from gateway.audit.record import AuditRecord, subject_hash
from gateway.audit.store import AuditStore
from gateway.audit.store_common import Query
from gateway.contests.store import ContestStore
from gateway.events.store import EventStore
from gateway.pipeline import due_process, programmes
from gateway.pipeline.due_process import ProposedAction
from gateway.pipeline.programmes import Catalogue
from gateway.transparency import indicators, publication
from gateway.transparency.indicators import Counts, Durations, Household, Month

PAGE = 1_000
MONTH_FORMAT = "YYYY-MM"


def month_of(text: str) -> Month:
    """The calendar month (UTC) named "YYYY-MM"; ValueError naming the format otherwise."""
    try:
        if not publication.MONTH.fullmatch(text):
            raise ValueError(text)
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


@dataclass(frozen=True, slots=True)
class RegistryView:
    """The embedded registry and what reading it needs: the audit key (to place the
    trail's keyed subject hashes in their household's region) and the programmes."""

    registry: Registry
    audit_key: bytes
    catalogue: Catalogue


_HOUSEHOLDS = """SELECT h.region, h.area, h.score,
    (SELECT group_concat(c.scheme, '|') FROM membership m JOIN coverage c ON c.idcs = m.idcs
        WHERE m.household_id = h.household_id)
FROM household h"""
_PLACES = """SELECT h.household_id, h.region, h.area, m.idcs
FROM household h LEFT JOIN membership m ON m.household_id = h.household_id
ORDER BY h.household_id"""


def places(view: RegistryView, progress: Progress) -> dict[str, tuple[str, str]]:
    """Each household's and member's keyed hash -> the household's (region, area)."""
    found: dict[str, tuple[str, str]] = {}
    conn = view.registry.connection()
    last = ""
    for household, region, area, idcs in conn.execute(_PLACES):
        place = indicators.region_name(region, area)
        if household != last:
            found[subject_hash(view.audit_key, "household_id", household)] = place
            last = household
        if idcs is not None:
            found[subject_hash(view.audit_key, "idcs", idcs)] = place
    progress(f"subjects placed in their region: {len(found):,}")
    return found


def _hash(view: RegistryView | None, kind: str, value: str) -> str:
    """A subject's keyed hash, as the trail holds it ("" without the audit key)."""
    if view is None:
        return ""
    label = "household_id" if kind in {"household_id", "household"} else "idcs"
    return subject_hash(view.audit_key, label, value)


def _households(view: RegistryView) -> Iterator[Household]:
    for region, area, score, schemes in view.registry.connection().execute(_HOUSEHOLDS):
        yield Household(region, area, float(score), tuple(schemes.split("|")) if schemes else ())


def read(
    month: Month,
    stores: Stores,
    view: RegistryView | None = None,
    progress: Progress = lambda _: None,
) -> Indicators:
    """Count the month from the stores (and the embedded registry, when there is one)."""
    audit, contests, events = stores.audit, stores.contests, stores.events
    records = list(_records(audit, month, progress))
    exchanges = indicators.exchanges(records, month)
    start_s, end_s = month.start_us // 1_000_000, month.end_us // 1_000_000
    revisions = stores.consents.revisions_between(start_s, end_s)
    consents = indicators.consents(
        revisions, stores.consents.expiring_between(start_s, end_s), month
    )
    steps = contests.steps_between(month.start_us, month.end_us)
    progress(f"contest steps: {len(steps):,}")
    actions = list(_actions(events))
    progress(f"proposed actions: {len(actions):,}")
    where = places(view, progress) if view is not None else {}
    by_region = indicators.lookups_by_region(records, where, month)
    last_day = dt.datetime.fromtimestamp(month.end_us / 1e6 - 1, dt.UTC).date()
    if view is not None:
        by_band, by_place = indicators.eligibility_snapshot(
            _households(view), view.catalogue, last_day
        )
    else:  # no embedded registry: the tables, empty
        by_band, by_place = indicators.eligibility_snapshot((), programmes.load_default(), last_day)
    return Indicators(
        counts=[
            exchanges,
            by_region,
            consents,
            indicators.contest_steps(((s.institution, s.event) for s in steps), month),
            indicators.due_process(actions, month),
            indicators.steps_by_region(
                ((_hash(view, c.subject_kind, c.subject), c) for c in revisions),
                ((s.subject_hash, s.event) for s in steps),
                ((_hash(view, "household_id", a.household_id), a) for a in actions),
                where,
                month,
            ),
            by_band,
            by_place,
        ],
        durations=[
            indicators.answer_days(((s.institution, s.event, s.opened_us) for s in steps), month),
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
