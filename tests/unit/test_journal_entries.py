"""A journal entry read from a remote backend is checked against the contract before the
ingester sees it; a row written by the reference backend reads back as it was."""

from __future__ import annotations

import pytest

from adapters.base import AdapterError
from adapters.journal_entries import from_entry, to_entry
from adapters.registry_db import JournalRow

ROW = JournalRow(
    source="CNSS",
    seq=7,
    event_id="CNSS-7",
    type="coverage.started",
    effective="2026-11-10",
    recorded="2026-11-11T08:30:00.000000Z",
    idcs="1234567897",
    household_id=None,
    before={"scheme": None},
    after={"scheme": "AMO_SALARIES"},
    corrects=None,
    corrected_type=None,
    facts={
        "household_id": "H000000001",
        "score": 9.1,
        "schemes": ["AMO_SALARIES"],
        "person_scheme": "AMO_SALARIES",
    },
)


def _refusal(**changes: object) -> str:
    entry = to_entry(ROW)
    for field, value in changes.items():
        setattr(entry, field, value)
    with pytest.raises(AdapterError) as caught:
        from_entry(entry, "CNSS")
    assert caught.value.invalid
    return str(caught.value)


def test_an_entry_reads_back_as_the_row_it_was_made_from() -> None:
    assert from_entry(to_entry(ROW), "CNSS") == ROW


def test_an_entry_without_facts_reads_back_without_them() -> None:
    entry = to_entry(ROW)
    entry.facts_json = ""
    assert from_entry(entry, "CNSS").facts is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", "RNP"),
        ("seq", 0),
        ("event_id", ""),
        ("event_id", "CNSS-7/eligibility/ASD"),
        ("event_id", "x" * 129),
        ("type", "eligibility.changed"),
        ("type", "household.rescored"),  # an RSU change, from CNSS's backend
        ("type", "action.proposed"),
        ("effective", "10/11/2026"),
        ("recorded", "2026-11-11T08:30:00"),
        ("idcs", "12 34"),
        ("before_json", "[1, 2]"),
        ("after_json", "{not json"),
        ("facts_json", '{"household_id": "H1", "score": "NaN", "schemes": []}'),
        ("facts_json", '{"household_id": "H1", "score": 9.1, "schemes": [], "living": -1}'),
        ("facts_json", '{"household_id": "H1", "score": true, "schemes": []}'),
        ("facts_json", '{"household_id": "H1", "score": 9.1, "schemes": [], "person_alive": 1}'),
    ],
)
def test_an_entry_outside_the_contract_is_refused_naming_the_field(
    field: str, value: object
) -> None:
    message = _refusal(**{field: value})
    assert field in message
    assert message.startswith("CNSS: journal entry ")


def test_a_correction_must_name_what_it_undoes() -> None:
    message = _refusal(type="correction", corrects="", corrected_type="")
    assert "corrects" in message


def test_a_refusal_never_quotes_the_value() -> None:
    message = _refusal(idcs="9999 PERSONAL")
    assert "PERSONAL" not in message


def test_facts_about_another_household_than_the_entry_are_refused() -> None:
    message = _refusal(household_id="H000000009")
    assert "facts_json" in message


def test_a_correction_of_another_sources_change_is_refused() -> None:
    message = _refusal(type="correction", corrects="RSU-1", corrected_type="household.rescored")
    assert "corrects" in message
