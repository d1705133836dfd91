"""What a DPO types into a search, read into an AccessQuery, with one error per field.

Shared by `jisr audit query` (fields named by their flags) and the console's search form
(fields named by their inputs), so both accept and refuse exactly the same things. Nothing
here asks the gateway: a value refused here is never sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from gateway.base.errors import Reason
from gateway.base.identifiers import is_valid_household_id, is_valid_idcs
from gateway.base.wire import method_path
from gateway.pb.jisr.v1 import audit_pb2, consent_pb2, contests_pb2, registry_pb2
from gateway.sdk.trail import AccessQuery

_SERVICES = (registry_pb2, consent_pb2, audit_pb2, contests_pb2)
DECISIONS = ("permit", "deny")
UTC = ZoneInfo("UTC")


class FilterError(ValueError):
    """A value that cannot be used; `field` names the flag or form input at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Filters:
    """The raw text of each filter, as typed ("" when left empty)."""

    subject: str = ""
    requester: str = ""
    purpose: str = ""
    method: str = ""
    decision: str = ""
    reason: str = ""
    since: str = ""
    until: str = ""


def subject(field: str, value: str) -> str:
    """An IDCS or a household id, checked before it is sent (the gateway hashes it)."""
    value = value.strip()
    if is_valid_idcs(value) or is_valid_household_id(value):
        return value
    raise FilterError(
        field, "not an IDCS (10 digits, valid check digit) or a household id (H and 9 digits)"
    )


def method(field: str, value: str) -> str:
    """A bare method name becomes its full path; a full path is kept as given."""
    value = value.strip()
    if value.startswith("/"):
        return value
    for module in _SERVICES:
        for service in module.DESCRIPTOR.services_by_name.values():
            if value in service.methods_by_name:
                return method_path(service.full_name, value)
    raise FilterError(field, f"no Jisr service has a method {value!r}")


def method_names() -> list[str]:
    """Every method of the services a record can name, by bare name (for a form's list)."""
    return sorted(
        {
            name
            for module in _SERVICES
            for service in module.DESCRIPTOR.services_by_name.values()
            for name in service.methods_by_name
        }
    )


def reason(field: str, value: str) -> str:
    value = value.strip()
    if value in Reason.__members__:
        return value
    raise FilterError(field, f"{value!r} is not a reason of docs/errors.md")


def institution(field: str, value: str) -> str:
    value = value.strip().upper()
    if value and (len(value) > 32 or not all(c.isalnum() or c == "_" for c in value)):
        raise FilterError(field, f"{value!r} is not an institution id (letters, digits, _)")
    return value


def code(field: str, value: str) -> str:
    """A purpose code: upper-case letters, digits and _ (what the policy names)."""
    value = value.strip().upper()
    if value and (len(value) > 64 or not all(c.isalnum() or c == "_" for c in value)):
        raise FilterError(field, f"{value!r} is not a purpose code (letters, digits, _)")
    return value


def moment(field: str, value: str, zone: dt.tzinfo = UTC) -> dt.datetime:
    """A day or a time; without an offset it is read in `zone`."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise FilterError(field, f"{value!r} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def access_query(
    typed: Filters, names: Filters | None = None, zone: dt.tzinfo = UTC
) -> AccessQuery:
    """The query the typed filters ask for. `names` gives each field's name for errors
    (a flag such as "--subject", or a form input); every field is checked, and the first
    problem found raises FilterError. See `problems` to collect them all."""
    found = problems(typed, names, zone)
    if isinstance(found, AccessQuery):
        return found
    raise found[0]


def problems(
    typed: Filters, names: Filters | None = None, zone: dt.tzinfo = UTC
) -> AccessQuery | list[FilterError]:
    """The query, or every field's problem (a form shows them all at once)."""
    names = names or Filters(*Filters.__dataclass_fields__)
    errors: list[FilterError] = []

    def text(check: Callable[[str, str], str], field: str, value: str) -> str:
        try:
            return check(field, value) if value.strip() else ""
        except FilterError as exc:
            errors.append(exc)
            return ""

    def when(field: str, value: str) -> dt.datetime | None:
        try:
            return moment(field, value, zone) if value.strip() else None
        except FilterError as exc:
            errors.append(exc)
            return None

    decision = typed.decision.strip().lower()
    if decision and decision not in DECISIONS:
        errors.append(FilterError(names.decision, f"{typed.decision!r} is not permit or deny"))
    query = AccessQuery(
        who=text(subject, names.subject, typed.subject),
        requester=text(institution, names.requester, typed.requester),
        purpose=text(code, names.purpose, typed.purpose),
        method=text(method, names.method, typed.method),
        decision=decision if decision in DECISIONS else "",
        reason=text(reason, names.reason, typed.reason),
        since=when(names.since, typed.since),
        until=when(names.until, typed.until),
    )
    if query.since and query.until and query.since >= query.until:
        errors.append(FilterError(names.until, f"must be after {names.since}"))
    return errors or query
