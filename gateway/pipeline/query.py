"""A request read once: the typed query the consent check, the pipeline and the answer
share.

A request's fields are checked here, after the policy allowed the call (docs/errors.md:
token, purpose and policy first, then the request's fields), and never again: the
consent gate takes the query's subject, the pipeline its subject, mask, programme and
date. (The audit names a request's identifiers earlier, as written, malformed ones
included: gateway/pipeline/disclosure.py.)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from google.protobuf.field_mask_pb2 import FieldMask

from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pipeline import validation
from gateway.pipeline.programmes import Programme

# ("idcs" | "household_id", value): one subject, well formed.
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class PersonQuery:
    """GetPersonStatus: one person, the PersonStatus paths asked for."""

    idcs: str
    mask: FieldMask

    @property
    def subject(self) -> Key:
        return ("idcs", self.idcs)


@dataclass(frozen=True, slots=True)
class HouseholdQuery:
    """GetHouseholdStatus: a household, by its id or a member's IDCS."""

    subject: Key
    mask: FieldMask


@dataclass(frozen=True, slots=True)
class EligibilityQuery:
    """VerifyEligibility: one subject, one programme, on one date."""

    subject: Key
    programme: Programme
    as_of: dt.date


def person(request: pb.GetPersonStatusRequest) -> PersonQuery:
    """The query of a GetPersonStatus request, or INVALID_ARGUMENT naming the field."""
    idcs = validation.idcs(request.idcs)
    return PersonQuery(idcs, validation.read_mask(request.read_mask, pb.PersonStatus.DESCRIPTOR))


def household(request: pb.GetHouseholdStatusRequest) -> HouseholdQuery:
    """The query of a GetHouseholdStatus request, or INVALID_ARGUMENT naming the field."""
    subject = validation.subject(request.subject)
    mask = validation.read_mask(request.read_mask, pb.HouseholdStatus.DESCRIPTOR)
    return HouseholdQuery(subject, mask)
