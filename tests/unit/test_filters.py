"""A DPO's search filters: what is accepted, and each refusal naming its field."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from gateway.sdk import filters
from gateway.sdk.trail import AccessQuery

CASABLANCA = ZoneInfo("Africa/Casablanca")


def test_empty_filters_ask_for_everything() -> None:
    assert filters.access_query(filters.Filters()) == AccessQuery()


def test_a_bare_method_name_becomes_its_full_path() -> None:
    query = filters.access_query(filters.Filters(method="GetPersonStatus"))
    assert query.method == "/jisr.v1.RegistryExchange/GetPersonStatus"


def test_institution_and_purpose_are_read_in_upper_case() -> None:
    query = filters.access_query(filters.Filters(requester=" cnss ", purpose="amo_enrolment"))
    assert (query.requester, query.purpose) == ("CNSS", "AMO_ENROLMENT")


def test_a_day_without_offset_is_read_in_the_zone_given() -> None:
    query = filters.access_query(filters.Filters(since="2026-11-02"), zone=CASABLANCA)
    assert query.since == dt.datetime(2026, 11, 2, tzinfo=CASABLANCA)


def test_every_bad_field_is_named_at_once() -> None:
    found = filters.problems(
        filters.Filters(subject="123", decision="maybe", reason="NOPE", since="yesterday")
    )
    assert isinstance(found, list)
    assert sorted(e.field for e in found) == ["decision", "reason", "since", "subject"]


def test_a_range_ending_before_it_starts_is_refused_on_until() -> None:
    with pytest.raises(filters.FilterError) as caught:
        filters.access_query(filters.Filters(since="2026-12-05", until="2026-12-01"))
    assert caught.value.field == "until"


def test_an_institution_with_punctuation_is_refused() -> None:
    with pytest.raises(filters.FilterError, match="requester"):
        filters.access_query(filters.Filters(requester="CNSS'; --"))


def test_method_names_lists_every_service_method() -> None:
    names = filters.method_names()
    assert {"GetPersonStatus", "QueryAccess", "GrantConsent"} <= set(names)
