"""The contract a MinistryBackend's answer must meet before the gateway uses any of it.

A remote backend is another institution's system: a bug or a compromise there must not
become an eligibility decision (a score of -inf is "below" every threshold) or reach
partners (an enum value the proto lacks, a 100,000-member household). So its records are
checked as strictly as partners' requests (gateway/pipeline/validation.py), and one bad record
fails the whole lookup: the gateway answers UNAVAILABLE / BACKEND_INVALID, never a
decision made from part of an answer.

Failures name the record kind and the field, never the value: they reach logs, and the
values are personal data. The checks are plain comparisons on fields already parsed, a
few microseconds per record (docs/architecture.md, step 5).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping, Set
from typing import Any

from google.type.date_pb2 import Date

from adapters.base import COVERAGE, ENROLMENT, HOUSEHOLD, MEMBERSHIP, PERSON, RecordMessage
from gateway.base.identifiers import is_valid_household_id, is_valid_idcs
from gateway.pb.jisr.v1 import backend_pb2, records_pb2
from gateway.pb.jisr.v1.backend_pb2 import RecordKind

# The RSU score is an index on a logarithmic scale (the thresholds are 9.33 and 9.74, the
# synthetic registry spans 8.0-11.5): 0 and 20 are far outside any household's, so a
# score beyond them is a fault of the backend, not a very poor or very rich household.
MIN_SCORE = 0.0
MAX_SCORE = 20.0
# Members of one RSU household: the synthetic registry's largest has 10 and very large
# Moroccan households have a few dozen; 50 bounds what one answer can carry (a household
# line is ~16 bytes) without refusing a real household.
MAX_HOUSEHOLD_MEMBERS = 50
# Programmes one household may be enrolled in at one institution (two exist today).
MAX_ENROLMENTS = 32
# Given and family names, in characters: never forwarded, but held in memory.
MAX_NAME_CHARS = 100
# AMO schemes and programme codes: upper-case codes, as in the programmes file.
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


def _defined(enum: Any, *, unspecified: bool) -> frozenset[int]:
    """The numbers `enum` defines; without 0 (`*_UNSPECIFIED`) unless `unspecified`."""
    return frozenset(v for v in enum.values() if unspecified or v != 0)


_VITAL = _defined(records_pb2.VitalStatus, unspecified=False)
_SEX = _defined(records_pb2.Sex, unspecified=True)
_CIVIL = _defined(records_pb2.CivilStatus, unspecified=True)
_RELATIONSHIP = _defined(records_pb2.Relationship, unspecified=False)
_REGION = _defined(records_pb2.Region, unspecified=False)
_AREA = _defined(records_pb2.Area, unspecified=False)
_DECEASED = records_pb2.VITAL_STATUS_DECEASED


class RecordInvalid(ValueError):  # noqa: N818 (reads as what it is: an invalid record)
    """A record outside the contract: `where` is the field, `problem` what is wrong."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def _date(value: Date, where: str) -> None:
    """A full calendar date (google.type.Date also allows partial ones; the records not)."""
    try:
        dt.date(value.year, value.month, value.day)
    except ValueError:
        # The library's message quotes the value: raise our own.
        raise RecordInvalid(where, "not a calendar date") from None


def _enum(value: int, allowed: frozenset[int], where: str) -> None:
    if value not in allowed:
        raise RecordInvalid(where, "not a value the contract defines")


def _idcs(value: str, where: str) -> None:
    if not is_valid_idcs(value):
        raise RecordInvalid(where, "not 10 digits with a valid check digit")


def _household_id(value: str, where: str) -> None:
    if not is_valid_household_id(value):
        raise RecordInvalid(where, "not 'H' and 9 digits")


def check_person(record: records_pb2.PersonRecord) -> None:
    """An RNP person. The vital status decides eligibility, so it may not be unspecified;
    a register may not know sex or civil status, so those may."""
    _idcs(record.idcs, "person.idcs")
    if len(record.given_name) > MAX_NAME_CHARS:
        raise RecordInvalid("person.given_name", "too long")
    if len(record.family_name) > MAX_NAME_CHARS:
        raise RecordInvalid("person.family_name", "too long")
    _enum(record.sex, _SEX, "person.sex")
    _enum(record.civil_status, _CIVIL, "person.civil_status")
    _enum(record.vital_status, _VITAL, "person.vital_status")
    _date(record.birth_date, "person.birth_date")
    death = record.death_date
    if record.vital_status == _DECEASED:
        _date(death, "person.death_date")
    elif death.year or death.month or death.day:
        raise RecordInvalid("person.death_date", "set for a living person")


def check_membership(record: records_pb2.MembershipRecord) -> None:
    """A person's RSU household link."""
    _idcs(record.idcs, "membership.idcs")
    _household_id(record.household_id, "membership.household_id")
    _enum(record.relationship, _RELATIONSHIP, "membership.relationship")


def check_household(record: records_pb2.HouseholdRecord) -> None:
    """An RSU household: the score decides eligibility, the rest is shown to partners."""
    _household_id(record.household_id, "household.household_id")
    _enum(record.region, _REGION, "household.region")
    _enum(record.area, _AREA, "household.area")
    score = record.score
    if not math.isfinite(score):
        raise RecordInvalid("household.score", "not a finite number")
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise RecordInvalid("household.score", f"outside [{MIN_SCORE}, {MAX_SCORE}]")
    _date(record.registered_on, "household.registered_on")
    _date(record.scored_on, "household.scored_on")
    members = record.members
    if not members:
        raise RecordInvalid("household.members", "empty (a household has a declarant)")
    if len(members) > MAX_HOUSEHOLD_MEMBERS:
        raise RecordInvalid("household.members", f"more than {MAX_HOUSEHOLD_MEMBERS}")
    seen: set[str] = set()
    for member in members:  # inlined: the hottest loop of the checks
        idcs = member.idcs
        if not is_valid_idcs(idcs):
            raise RecordInvalid("household.members.idcs", "not 10 digits with a valid check digit")
        if member.relationship not in _RELATIONSHIP:
            raise RecordInvalid(
                "household.members.relationship", "not a value the contract defines"
            )
        seen.add(idcs)
    if len(seen) != len(members):
        raise RecordInvalid("household.members.idcs", "repeated")


def check_coverage(record: records_pb2.CoverageRecord) -> None:
    """A person's CNSS coverage: the scheme decides "other AMO coverage"."""
    _idcs(record.idcs, "coverage.idcs")
    if not _CODE.fullmatch(record.scheme):
        raise RecordInvalid("coverage.scheme", "not an upper-case code like AMO_TNS")
    _date(record.since, "coverage.since")


def check_enrolment(record: records_pb2.EnrolmentRecord) -> None:
    """A household's programme enrolments, shown to partners."""
    _household_id(record.household_id, "enrolment.household_id")
    enrolments = record.enrolments
    if len(enrolments) > MAX_ENROLMENTS:
        raise RecordInvalid("enrolment.enrolments", f"more than {MAX_ENROLMENTS}")
    for item in enrolments:
        if not _CODE.fullmatch(item.programme):
            raise RecordInvalid("enrolment.enrolments.programme", "not an upper-case code")
        _date(item.since, "enrolment.enrolments.since")


Check = Callable[[Any], None]
# Per kind: the Record oneof field that must be set, the record's key field, its check.
KINDS: Mapping[int, tuple[str, str, Check]] = {
    PERSON: ("person", "idcs", check_person),
    MEMBERSHIP: ("membership", "idcs", check_membership),
    HOUSEHOLD: ("household", "household_id", check_household),
    COVERAGE: ("coverage", "idcs", check_coverage),
    ENROLMENT: ("enrolment", "household_id", check_enrolment),
}


def records_by_key(
    kind: RecordKind.ValueType, envelopes: Iterable[backend_pb2.Record], asked: Set[str]
) -> dict[str, RecordMessage]:
    """The records of one FetchRecords answer by key, each checked against the contract.

    Every record must be of `kind`, keyed by one of the `asked` keys, each key at most
    once: a backend answering what was not asked for is as wrong as one answering a bad
    value. Raises RecordInvalid for the first fault."""
    field, key_field, check = KINDS[kind]
    found: dict[str, RecordMessage] = {}
    for envelope in envelopes:
        if envelope.WhichOneof("record") != field:
            raise RecordInvalid("record", f"not a {field} record")
        record: RecordMessage = getattr(envelope, field)
        check(record)
        key = getattr(record, key_field)
        if key not in asked:
            raise RecordInvalid(f"{field}.{key_field}", "a key that was not asked for")
        if key in found:
            raise RecordInvalid(f"{field}.{key_field}", "answered twice")
        found[key] = record
    return found
