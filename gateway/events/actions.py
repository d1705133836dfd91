"""The events due process sends (gateway/pipeline/due_process.py): a proposed action, its
withdrawal, and the eligibility change that carries it out, as entries of the gateway's
own sources in the event log.

Two sources, each with its own sequence, because two different loops number them: "JISR"
for what the ingester derives from the registries' changes (eligibility changes,
proposals, withdrawals when the facts turn back), numbered from the rows it reads, so that
replicas reading the same rows number them alike; "JISR-DUE" for what the due-process
sweep decides on the clock and on contests (the final change, a withdrawal on an upheld
contest), numbered inside the transaction that moves the action. Sharing one sequence,
a sweep committing between the ingester's numbering and its append would take the
number of one of the ingester's events.

Ids derive from the action's id, itself derived from the change that caused it, so that
replicas deriving the same step produce the same event and the log keeps it once.
"""

from __future__ import annotations

import datetime as dt

from google.type.date_pb2 import Date

from gateway.base import event_types
from gateway.events.model import DERIVED, SWEPT, NewEvent
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pipeline.due_process import ProposedAction

# The sources of the events the gateway itself derives (see the module docstring).
__all__ = ["DERIVED", "SWEPT", "carried_out", "proposed", "withdrawn"]


def _utc_date(us: int) -> Date:
    day = dt.datetime.fromtimestamp(us / 1_000_000, tz=dt.UTC).date()
    return Date(year=day.year, month=day.month, day=day.day)


def _base(  # noqa: PLR0917
    action: ProposedAction, kind: str, event_id: str, seq: int, at_us: int, source: str
) -> epb.ChangeEvent:
    event = epb.ChangeEvent(
        event_id=event_id,
        source=source,
        source_seq=seq,
        type=event_types.number(kind),
        effective=_utc_date(at_us),
        household_id=action.household_id,
        programme=action.programme,
        action_id=action.action_id,
        threshold_version=action.threshold_version,
    )
    event.recorded.FromMicroseconds(at_us)
    return event


def _entry(event: epb.ChangeEvent, kind: str, at_us: int) -> NewEvent:
    return NewEvent(
        source=event.source,
        source_seq=event.source_seq,
        event_id=event.event_id,
        type=kind,
        idcs="",
        household_id=event.household_id,
        recorded_us=at_us,
        payload=event.SerializeToString(),
    )


def proposed(action: ProposedAction, seq: int) -> NewEvent:
    """`action.proposed`: the benefit would end; it goes on until `notice_until`."""
    kind = "action.proposed"
    event = _base(action, kind, action.action_id, seq, action.proposed_us, DERIVED)
    event.eligible, event.previous_eligible = False, True
    event.reasons.extend(action.reasons)  # type: ignore[arg-type]
    event.previous_reasons.extend(action.previous_reasons)  # type: ignore[arg-type]
    event.cause = action.cause
    event.notice_until.CopyFrom(_utc_date(action.notice_until_us))
    return _entry(event, kind, action.proposed_us)


def withdrawn(  # noqa: PLR0917
    action: ProposedAction, because: str, cause: str, seq: int, at_us: int, source: str
) -> NewEvent:
    """`action.withdrawn`: the action will not be carried out (`because`); `cause` is the
    change that turned the decision back (source DERIVED), "" when a contest did (SWEPT)."""
    kind = "action.withdrawn"
    event = _base(action, kind, f"{action.action_id}/withdrawn", seq, at_us, source)
    event.eligible, event.previous_eligible = True, True
    event.reasons.extend(action.previous_reasons)  # type: ignore[arg-type]
    event.withdrawn_because = because
    event.cause = cause
    return _entry(event, kind, at_us)


def carried_out(action: ProposedAction, seq: int, at_us: int) -> NewEvent:
    """The final `eligibility.changed` of an action (source SWEPT): the benefit ends now."""
    kind = "eligibility.changed"
    event = _base(action, kind, f"{action.action_id}/carried-out", seq, at_us, SWEPT)
    event.eligible, event.previous_eligible = False, True
    event.reasons.extend(action.reasons)  # type: ignore[arg-type]
    event.previous_reasons.extend(action.previous_reasons)  # type: ignore[arg-type]
    event.cause = action.cause
    return _entry(event, kind, at_us)
