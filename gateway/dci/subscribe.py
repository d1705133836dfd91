"""What a DCI `subscribe` item asks, as the gateway's CreateSubscription (pure), and the
answers of `on-subscribe` and `on-unsubscribe`.

One item is one subscription to one event type, about the subject its `filter` names (an
idtype-value or an identifier-equality predicate, as a search's query), for the purpose of
its `authorize` object. The type is Jisr's own name (`person.died`, `household.rescored`,
docs/events.md) or one of the two the social standard names: `REGISTER` (a birth) and
`NewHouseHoldMember` (a person joining a household).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.base import event_types
from gateway.dci.search import Rejected, identified_subject, purpose_of
from gateway.pb.jisr.v1 import events_pb2 as epb
from gateway.pb.jisr.v1 import registry_pb2 as pb

DCI_TYPES = {"REGISTER": "person.born", "NewHouseHoldMember": "member.joined"}
NOTIFY_TYPES = "rjct.notify_types.invalid"
NOTIFY_DETAILS = "rjct.notify_details.invalid"


@dataclass(frozen=True, slots=True)
class Planned:
    """The CreateSubscription an item asks for, and its purpose."""

    request: epb.CreateSubscriptionRequest
    purpose: str


def event_type(value: object) -> str | None:
    """Jisr's name of a DCI reg_event_type, None if it names none."""
    if not isinstance(value, str):
        return None
    name = DCI_TYPES.get(value.rsplit(":", 1)[-1], value)
    return name if name in event_types.NAMES else None


def plan(criteria: Mapping[str, Any]) -> Planned | Rejected:
    """The subscription a (schema-valid) subscribe_criteria asks for."""
    kind = event_type(criteria.get("reg_event_type"))
    if kind is None:
        names = ", ".join([*DCI_TYPES, *event_types.NAMES])
        return Rejected(NOTIFY_TYPES, f"reg_event_type must be one of {names}")
    purpose = purpose_of(criteria)
    if isinstance(purpose, Rejected):
        return purpose
    subject = identified_subject(
        criteria.get("filter_type", "idtype-value"), criteria.get("filter")
    )
    if isinstance(subject, Rejected):
        return Rejected(NOTIFY_DETAILS, subject.message)
    field_name, value = subject
    request = epb.CreateSubscriptionRequest(
        purpose=purpose,
        types=[event_types.number(kind)],
        subjects=[pb.Subject(**{field_name: value})],
    )
    return Planned(request, purpose)


def subscribed(reference: str, code: str, at: str) -> dict[str, Any]:
    """A subscribe_response item for a subscription made."""
    return {
        "reference_id": reference,
        "timestamp": at,
        "status": "succ",
        "subscriptions": [{"code": code, "status": "subscribe", "timestamp": at}],
    }


def refused(reference: str, at: str, code: str, message: str) -> dict[str, Any]:
    """A subscribe_response item for a subscription not made."""
    return {
        "reference_id": reference,
        "timestamp": at,
        "status": "rjct",
        "status_reason_code": code,
        "status_reason_message": message[:999],
    }


def reason_code(reason: str) -> str:
    """The subscribe reject code for a refusal of the engine's."""
    if reason == "EVENT_TYPE_NOT_ALLOWED":
        return NOTIFY_TYPES
    if reason in {"INVALID_IDCS", "INVALID_HOUSEHOLD_ID"}:
        return "rjct.person_id.invalid"
    return NOTIFY_DETAILS
