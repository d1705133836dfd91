"""Checks on request fields, before any registry is read. Pure functions."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from google.protobuf.descriptor import Descriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.type.date_pb2 import Date

from gateway.base.errors import Reason, invalid
from gateway.base.identifiers import is_valid_household_id, is_valid_idcs
from gateway.pb.jisr.v1.registry_pb2 import Subject

_PURPOSE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
MOROCCO = ZoneInfo("Africa/Casablanca")


def purpose(value: str) -> str:
    """A purpose code such as AMO_ENROLMENT; required on every request."""
    if not value:
        raise invalid(Reason.MISSING_PURPOSE, "purpose is required", "purpose")
    if not _PURPOSE.fullmatch(value):
        raise invalid(
            Reason.INVALID_PURPOSE,
            "purpose must be an upper-case code like AMO_ENROLMENT",
            "purpose",
        )
    return value


def idcs(value: str, field: str = "idcs") -> str:
    """A well-formed IDCS (10 digits, valid check digit)."""
    if not value:
        raise invalid(Reason.MISSING_SUBJECT, f"{field} is required", field)
    if not is_valid_idcs(value):
        raise invalid(
            Reason.INVALID_IDCS, f"{field} is not 10 digits with a valid check digit", field
        )
    return value


def household_id(value: str, field: str = "household_id") -> str:
    """A well-formed RSU household id ("H" and 9 digits)."""
    if not is_valid_household_id(value):
        raise invalid(Reason.INVALID_HOUSEHOLD_ID, f"{field} is not 'H' and 9 digits", field)
    return value


def subject(value: Subject, field: str = "subject") -> tuple[str, str]:
    """('idcs' | 'household_id', key) for a subject with exactly one well-formed id."""
    which = value.WhichOneof("subject")
    if which == "idcs":
        return which, idcs(value.idcs, f"{field}.idcs")
    if which == "household_id":
        return which, household_id(value.household_id, f"{field}.household_id")
    raise invalid(Reason.MISSING_SUBJECT, f"{field} names no IDCS or household id", field)


def as_of(value: Date, has_value: bool, field: str = "as_of") -> dt.date:
    """The decision date: the given calendar date, or today in Morocco when unset."""
    if not has_value or (value.year, value.month, value.day) == (0, 0, 0):
        return dt.datetime.now(MOROCCO).date()
    try:
        return dt.date(value.year, value.month, value.day)
    except ValueError:
        raise invalid(Reason.INVALID_DATE, f"{field} must be a full calendar date", field) from None


def read_mask(mask: FieldMask, descriptor: Descriptor, field: str = "read_mask") -> FieldMask:
    """A canonical field mask whose every path exists in `descriptor`."""
    if not mask.paths:
        return mask
    if not mask.IsValidForDescriptor(descriptor):
        raise invalid(
            Reason.INVALID_FIELD_MASK,
            f"{field} names a path that {descriptor.name} does not have",
            field,
        )
    canonical = FieldMask()
    canonical.CanonicalFormFromMask(mask)
    return canonical
