"""What one DCI search request item asks, as the registry call that answers it (pure).

Jisr answers about one subject per search item, as its gRPC methods do: the item names a
person or a household by an identifier, and the purpose it is asked for. An item that
names a population instead (an expression or a predicate over other attributes) is
rejected with `rjct.search_criteria.invalid`: a partner's grant covers the subjects it asks
about under a purpose, never a trawl of the registry (docs/dci.md, "Queries"). The three
query types are read alike: `idtype-value`, a one-condition `predicate`, and a NoSql
`expression` whose query is one identifier's equality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from gateway.dci import records
from gateway.pb.jisr.v1 import registry_pb2 as pb

PERSON_TYPES = frozenset({"IDCS", "UIN"})  # the RNP's digital identifier (DCI's "UIN")
HOUSEHOLD_TYPES = frozenset({"HOUSEHOLD_ID"})  # the RSU's household identifier
INVALID = "rjct.search_criteria.invalid"


@dataclass(frozen=True, slots=True)
class Lookup:
    """The registry method that answers an item, its request, and how to read its answer."""

    method: str  # a RegistryExchange method name
    request: Message
    purpose: str
    page_size: int
    page_number: int

    def records(self, body: bytes) -> list[dict[str, Any]]:
        """The answer's record (one subject: one page)."""
        if self.method == "GetPersonStatus":
            return [records.person(pb.GetPersonStatusResponse.FromString(body).person)]
        return [records.group(pb.GetHouseholdStatusResponse.FromString(body).household)]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The item cannot be asked: its `rjct` code and why (no personal data)."""

    code: str
    message: str


def plan(criteria: Mapping[str, Any]) -> Lookup | Rejected:
    """The call an item's (schema-valid) search_criteria asks for."""
    purpose = purpose_of(criteria)
    if isinstance(purpose, Rejected):
        return purpose
    subject = identified_subject(criteria.get("query_type"), criteria.get("query"))
    if isinstance(subject, Rejected):
        return subject
    kind, value = subject
    paging = _paging(criteria.get("pagination"))
    if isinstance(paging, Rejected):
        return paging
    entity = criteria.get("response_entity") or _collection(criteria.get("query"))
    if kind == "household_id" and entity == "Member":
        return Rejected(INVALID, "a household identifier answers a Group, not a Member")
    if kind == "idcs" and entity != "Group":
        request: Message = pb.GetPersonStatusRequest(purpose=purpose, idcs=value)
        return Lookup("GetPersonStatus", request, purpose, *paging)
    subject_message = pb.Subject(**{kind: value})
    request = pb.GetHouseholdStatusRequest(purpose=purpose, subject=subject_message)
    return Lookup("GetHouseholdStatus", request, purpose, *paging)


def purpose_of(criteria: Mapping[str, Any]) -> str | Rejected:
    """The purpose code of `consent` and `authorize` (the same if both give one)."""
    codes = set()
    for name in ("consent", "authorize"):
        holder = criteria.get(name)
        given = holder.get("purpose") if isinstance(holder, Mapping) else None
        code = given.get("code") if isinstance(given, Mapping) else None
        if code is not None:
            if not isinstance(code, str):
                return Rejected(INVALID, f"{name}.purpose.code must be a purpose code")
            codes.add(code)
    if len(codes) > 1:
        return Rejected(INVALID, "consent and authorize name different purposes")
    return codes.pop() if codes else ""  # none: the engine refuses it, recorded


def identified_subject(query_type: object, query: object) -> tuple[str, str] | Rejected:
    if query_type == "idtype-value" and isinstance(query, Mapping):
        return _identified(query.get("type"), query.get("value"))
    if query_type == "predicate" and isinstance(query, list) and len(query) == 1:
        condition = query[0]
        first = condition.get("expression1") if isinstance(condition, Mapping) else None
        if (
            isinstance(first, Mapping)
            and first.get("operator") == "eq"
            and condition.get("condition") is None  # `not` would invert it, `and`/`or` widen
            and "expression2" not in condition
        ):
            return _identified(first.get("attribute_name"), first.get("attribute_value"))
    if query_type == "expression" and isinstance(query, Mapping):
        found = _expression_subject(query)
        if found is not None:
            return found
    return Rejected(
        INVALID,
        "only a search for one person or household by its identifier is answered"
        " (idtype-value, a predicate `IDCS|HOUSEHOLD_ID eq VALUE`, or a NoSql expression"
        " `{ID: {$eq: VALUE}}`); see docs/dci.md",
    )


def _expression_subject(query: Mapping[str, Any]) -> tuple[str, str] | Rejected | None:
    """The subject of a NoSql expression naming exactly one identifier's value, else None.

    The standard leaves the expression's syntax to its `type`; its own example is a NoSql
    (MongoDB-style) filter, `{"collection": "Group", "query": {...}}`. Only a filter with a
    single member, an identifier equal to a string (`{"IDCS": "X"}` or
    `{"IDCS": {"$eq": "X"}}`), names one subject; anything else (`$and`, `$lt`, `$ne`, two
    members) describes a population.
    """
    kind = query.get("type")
    value = query.get("value")
    expression = value.get("expression") if isinstance(value, Mapping) else None
    if not (isinstance(kind, str) and kind.rsplit(":", 1)[-1].lower() == "nosql"):
        return None
    if not isinstance(expression, Mapping) or _collection(query) == _NOT_A_COLLECTION:
        return None
    selector = expression.get("query")
    if not isinstance(selector, Mapping) or len(selector) != 1:
        return None
    ((name, wanted),) = selector.items()
    if isinstance(wanted, Mapping):
        if list(wanted) != ["$eq"]:
            return None
        wanted = wanted["$eq"]
    if not isinstance(wanted, str):
        return None
    return _identified(name, wanted)


_NOT_A_COLLECTION = "?"


def _collection(query: object) -> str | None:
    """The entity a NoSql expression's `collection` names (Group or Member), if any."""
    value = query.get("value") if isinstance(query, Mapping) else None
    expression = value.get("expression") if isinstance(value, Mapping) else None
    collection = expression.get("collection") if isinstance(expression, Mapping) else None
    if collection is None:
        return None
    return collection if collection in ("Group", "Member") else _NOT_A_COLLECTION


def _identified(kind: object, value: object) -> tuple[str, str] | Rejected:
    if kind in PERSON_TYPES and isinstance(value, str):
        return "idcs", value
    if kind in HOUSEHOLD_TYPES and isinstance(value, str):
        return "household_id", value
    types = ", ".join(sorted(PERSON_TYPES | HOUSEHOLD_TYPES))
    return Rejected(INVALID, f"the identifier type must be one of {types}, its value a string")


def _paging(pagination: object) -> tuple[int, int] | Rejected:
    if not isinstance(pagination, Mapping):
        return 1, 1
    size, number = _whole(pagination.get("page_size")), _whole(pagination.get("page_number", 1))
    if size is None or number is None or size < 1 or number != 1:
        return Rejected(
            "rjct.pagination.invalid", "one subject answers one page: page_number 1, page_size >= 1"
        )
    return size, number


def _whole(value: object) -> int | None:
    """A whole number (the schema allows 5.0 for an int32), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not float(value).is_integer():
        return None
    return int(value)
