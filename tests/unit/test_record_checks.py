"""The contract every record from a MinistryBackend must meet (adapters/record_checks.py).

Each test starts from a record that passes and breaks one thing, so a refusal can only
come from that thing. Pure functions: no backend, no network."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TypeVar

import pytest
from google.protobuf.message import Message
from google.type.date_pb2 import Date

from adapters.base import COVERAGE, ENROLMENT, HOUSEHOLD, MEMBERSHIP, PERSON
from adapters.record_checks import (
    MAX_ENROLMENTS,
    MAX_HOUSEHOLD_MEMBERS,
    MAX_NAME_CHARS,
    MAX_SCORE,
    MIN_SCORE,
    RecordInvalid,
    records_by_key,
)
from gateway.base.identifiers import is_valid_idcs, luhn_digit, make_idcs
from gateway.pb.jisr.v1 import records_pb2 as rec
from gateway.pb.jisr.v1.backend_pb2 import Record

IDCS = make_idcs("123456789")
Maker = Callable[[], Message]
HID = "H000000042"
DAY = Date(year=2024, month=2, day=29)


def _idcs(n: int) -> str:
    return make_idcs(f"{200_000_000 + n:09d}")


def person() -> rec.PersonRecord:
    return rec.PersonRecord(
        idcs=IDCS,
        given_name="Fatima Zahra",
        family_name="El Idrissi",
        sex=rec.SEX_FEMALE,
        birth_date=DAY,
        civil_status=rec.CIVIL_STATUS_MARRIED,
        vital_status=rec.VITAL_STATUS_ALIVE,
    )


def membership() -> rec.MembershipRecord:
    return rec.MembershipRecord(idcs=IDCS, household_id=HID, relationship=rec.RELATIONSHIP_CHILD)


def household(members: int = 3) -> rec.HouseholdRecord:
    record = rec.HouseholdRecord(
        household_id=HID,
        region=rec.REGION_SOUSS_MASSA,
        area=rec.AREA_RURAL,
        score=9.5,
        registered_on=DAY,
        scored_on=DAY,
    )
    for n in range(members):
        record.members.add(idcs=_idcs(n), relationship=rec.RELATIONSHIP_CHILD)
    return record


def coverage() -> rec.CoverageRecord:
    return rec.CoverageRecord(idcs=IDCS, scheme="AMO_SALARIES", since=DAY)


def enrolment() -> rec.EnrolmentRecord:
    record = rec.EnrolmentRecord(household_id=HID)
    record.enrolments.add(programme="ASD", since=DAY)
    return record


def _refusal(record: Message) -> str:
    """The field a one-record answer is refused for ('' when it is accepted)."""
    kinds = {
        rec.PersonRecord: (PERSON, "person", "idcs"),
        rec.MembershipRecord: (MEMBERSHIP, "membership", "idcs"),
        rec.HouseholdRecord: (HOUSEHOLD, "household", "household_id"),
        rec.CoverageRecord: (COVERAGE, "coverage", "idcs"),
        rec.EnrolmentRecord: (ENROLMENT, "enrolment", "household_id"),
    }
    kind, field, key = kinds[type(record)]
    envelope = Record()
    getattr(envelope, field).CopyFrom(record)
    try:
        records_by_key(kind, [envelope], {getattr(record, key)})
    except RecordInvalid as exc:
        return exc.where
    return ""


R = TypeVar("R", bound=Message)


def _with(record: R, **changes: object) -> R:
    for name, value in changes.items():
        setattr(record, name, value)
    return record


# -- records within the contract ---------------------------------------------------------


@pytest.mark.parametrize(
    "make", [person, membership, household, coverage, enrolment], ids=lambda f: f.__name__
)
def test_a_record_within_the_contract_is_accepted(make: Maker) -> None:
    assert _refusal(make()) == ""


def test_a_deceased_person_with_a_death_date_is_accepted() -> None:
    record = _with(person(), vital_status=rec.VITAL_STATUS_DECEASED)
    record.death_date.CopyFrom(Date(year=2025, month=1, day=31))
    assert _refusal(record) == ""


def test_scores_at_the_ends_of_the_range_are_accepted() -> None:
    assert _refusal(_with(household(), score=MIN_SCORE)) == ""
    assert _refusal(_with(household(), score=MAX_SCORE)) == ""


def test_a_household_of_the_largest_size_is_accepted() -> None:
    assert _refusal(household(MAX_HOUSEHOLD_MEMBERS)) == ""


# -- what is refused, and the field named -------------------------------------------------


@pytest.mark.parametrize("score", [math.inf, -math.inf, math.nan])
def test_a_non_finite_score_is_refused(score: float) -> None:
    assert _refusal(_with(household(), score=score)) == "household.score"


@pytest.mark.parametrize("score", [MIN_SCORE - 0.001, MAX_SCORE + 0.001, -1e308, 1e308])
def test_a_score_outside_the_documented_range_is_refused(score: float) -> None:
    assert _refusal(_with(household(), score=score)) == "household.score"


def test_a_household_beyond_the_largest_size_is_refused() -> None:
    assert _refusal(household(MAX_HOUSEHOLD_MEMBERS + 1)) == "household.members"


def test_a_household_without_members_is_refused() -> None:
    assert _refusal(household(0)) == "household.members"


def test_a_member_listed_twice_is_refused() -> None:
    record = household(1)
    record.members.add(idcs=record.members[0].idcs, relationship=rec.RELATIONSHIP_SPOUSE)
    assert _refusal(record) == "household.members.idcs"


UNDEFINED_ENUMS: list[tuple[Maker, str, int]] = [
    (household, "region", 13),
    (household, "region", -1),
    (household, "area", 3),
    (membership, "relationship", 9),
    (person, "vital_status", 3),
    (person, "sex", 3),
    (person, "civil_status", 5),
]


@pytest.mark.parametrize(
    ("make", "field", "value"), UNDEFINED_ENUMS, ids=[f"{f}={v}" for _, f, v in UNDEFINED_ENUMS]
)
def test_an_enum_value_the_contract_does_not_define_is_refused(
    make: Maker, field: str, value: int
) -> None:
    record = _with(make(), **{field: value})
    assert _refusal(record).endswith(f".{field}")


REQUIRED_ENUMS: list[tuple[Maker, str]] = [
    (household, "region"),
    (household, "area"),
    (membership, "relationship"),
    (person, "vital_status"),
]


@pytest.mark.parametrize(("make", "field"), REQUIRED_ENUMS, ids=[f for _, f in REQUIRED_ENUMS])
def test_unspecified_is_refused_where_the_contract_needs_a_value(make: Maker, field: str) -> None:
    assert _refusal(_with(make(), **{field: 0})).endswith(f".{field}")


def test_unspecified_sex_and_civil_status_are_accepted_as_unknown() -> None:
    record = _with(person(), sex=0, civil_status=0)
    assert _refusal(record) == ""


def test_a_member_relationship_left_unspecified_is_refused() -> None:
    record = household(1)
    record.members[0].relationship = rec.RELATIONSHIP_UNSPECIFIED
    assert _refusal(record) == "household.members.relationship"


BAD_IDCS = ["", "123456789", "12345678901", make_idcs("123456789")[:9] + "0", "١٢٣٤٥٦٧٨٩٠"]


@pytest.mark.parametrize("value", BAD_IDCS)
def test_a_malformed_idcs_is_refused_wherever_it_appears(value: str) -> None:
    assert _refusal(_with(person(), idcs=value)) == "person.idcs"
    assert _refusal(_with(coverage(), idcs=value)) == "coverage.idcs"
    member = household(1)
    member.members[0].idcs = value
    assert _refusal(member) == "household.members.idcs"


@pytest.mark.parametrize("value", ["", "H12345678", "h000000042", "H0000000421", "X000000042"])
def test_a_malformed_household_id_is_refused_wherever_it_appears(value: str) -> None:
    assert _refusal(_with(household(), household_id=value)) == "household.household_id"
    assert _refusal(_with(enrolment(), household_id=value)) == "enrolment.household_id"
    assert _refusal(_with(membership(), household_id=value)) == "membership.household_id"


BAD_DATES = [Date(), Date(year=2023, month=2, day=29), Date(year=2024, month=13, day=1)]


@pytest.mark.parametrize("day", BAD_DATES, ids=["unset", "29-feb-2023", "month-13"])
def test_a_date_that_is_not_a_full_calendar_date_is_refused(day: Date) -> None:
    dated: list[tuple[Maker, str]] = [
        (person, "person.birth_date"),
        (household, "household.registered_on"),
        (coverage, "coverage.since"),
    ]
    for make, field in dated:
        record = make()
        getattr(record, field.split(".")[1]).CopyFrom(day)
        assert _refusal(record) == field


def test_a_deceased_person_without_a_death_date_is_refused() -> None:
    record = _with(person(), vital_status=rec.VITAL_STATUS_DECEASED)
    assert _refusal(record) == "person.death_date"


def test_a_living_person_with_a_death_date_is_refused() -> None:
    record = person()
    record.death_date.CopyFrom(DAY)
    assert _refusal(record) == "person.death_date"


def test_a_name_longer_than_the_limit_is_refused() -> None:
    record = _with(person(), family_name="A" * (MAX_NAME_CHARS + 1))
    assert _refusal(record) == "person.family_name"


@pytest.mark.parametrize("scheme", ["", "amo_tns", "AMO TNS", "A" * 33])
def test_a_coverage_scheme_that_is_not_a_code_is_refused(scheme: str) -> None:
    assert _refusal(_with(coverage(), scheme=scheme)) == "coverage.scheme"


def test_more_enrolments_than_the_limit_are_refused() -> None:
    record = enrolment()
    for _ in range(MAX_ENROLMENTS):
        record.enrolments.add(programme="ASD", since=DAY)
    assert _refusal(record) == "enrolment.enrolments"


def test_an_enrolment_programme_that_is_not_a_code_is_refused() -> None:
    record = enrolment()
    record.enrolments[0].programme = "asd<script>"
    assert _refusal(record) == "enrolment.enrolments.programme"


# -- the answer as a whole -----------------------------------------------------------------


def _envelope(record: rec.HouseholdRecord) -> Record:
    return Record(household=record)


def test_a_record_for_a_key_not_asked_for_is_refused() -> None:
    with pytest.raises(RecordInvalid) as err:
        records_by_key(HOUSEHOLD, [_envelope(household())], {"H000000043"})
    assert (err.value.where, err.value.problem) == (
        "household.household_id",
        "a key that was not asked for",
    )


def test_a_key_answered_twice_is_refused() -> None:
    twice = [_envelope(household()), _envelope(household())]
    with pytest.raises(RecordInvalid) as err:
        records_by_key(HOUSEHOLD, twice, {HID})
    assert err.value.problem == "answered twice"


def test_a_record_of_another_kind_is_refused() -> None:
    with pytest.raises(RecordInvalid) as err:
        records_by_key(COVERAGE, [_envelope(household())], {HID})
    assert err.value.where == "record"


def test_an_empty_envelope_is_refused() -> None:
    with pytest.raises(RecordInvalid):
        records_by_key(HOUSEHOLD, [Record()], {HID})


def test_records_within_the_contract_come_back_by_key() -> None:
    found = records_by_key(HOUSEHOLD, [_envelope(household())], {HID, "H000000043"})
    assert list(found) == [HID]


def test_a_refusal_names_the_field_never_the_value() -> None:
    record = _with(household(), score=-math.inf)
    with pytest.raises(RecordInvalid) as err:
        records_by_key(HOUSEHOLD, [_envelope(record)], {HID})
    assert "inf" not in str(err.value)
    assert HID not in str(err.value)
    bad_member = household(1)
    bad_member.members[0].idcs = IDCS[:9] + str((int(IDCS[9]) + 1) % 10)
    with pytest.raises(RecordInvalid) as err:
        records_by_key(HOUSEHOLD, [_envelope(bad_member)], {HID})
    assert bad_member.members[0].idcs not in str(err.value)


def test_the_fast_idcs_check_agrees_with_the_luhn_digit_definition() -> None:
    """is_valid_idcs was rewritten for speed (the checks run it ~5,000 times a batch)."""
    rng = random.Random(7)
    for _ in range(20_000):
        value = f"{rng.randrange(10**10):010d}"
        assert is_valid_idcs(value) == (luhn_digit(value[:9]) == value[9])
