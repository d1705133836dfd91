"""One line of a file of changes (adapters/change_lines.py): every type parses into its
change; every kind of fault names the member at fault and never quotes the value."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters import change_lines as cl
from gateway.base import event_types
from gateway.base.identifiers import make_idcs

IDCS = make_idcs("123456789")
OTHER_IDCS = make_idcs("987654321")
BAD_CHECK = IDCS[:9] + str((int(IDCS[9]) + 1) % 10)
HOUSEHOLD = "H042117093"

COMMON = {"effective": "2026-11-03"}
VALID: dict[str, dict[str, Any]] = {
    "person.died": {"source": "RNP", "idcs": IDCS},
    "person.born": {
        "source": "RNP",
        "idcs": IDCS,
        "given_name": "Salma",
        "family_name": "Alaoui",
        "sex": "F",
    },
    "member.joined": {
        "source": "RSU",
        "idcs": IDCS,
        "household_id": HOUSEHOLD,
        "relationship": "CHILD",
    },
    "member.left": {"source": "RSU", "idcs": IDCS, "household_id": HOUSEHOLD},
    "household.rescored": {"source": "RSU", "household_id": HOUSEHOLD, "score": 9.81},
    "household.region_changed": {
        "source": "RSU",
        "household_id": HOUSEHOLD,
        "region": "CASABLANCA_SETTAT",
        "area": "URBAN",
    },
    "coverage.started": {"source": "CNSS", "idcs": IDCS, "scheme": "AMO_SALARIES"},
    "coverage.ended": {"source": "CNSS", "idcs": IDCS},
    "correction": {"source": "RSU", "corrects": "RSU-2026-11-000001"},
}


def line(type_: str, **changes: Any) -> dict[str, Any]:
    """A valid line of `type_`, with `changes` (a value of None removes the member)."""
    obj = {"id": "EV-1", "type": type_, **COMMON, **VALID[type_], **changes}
    return {k: v for k, v in obj.items() if v is not None}


def error(text: str) -> cl.LineError:
    with pytest.raises(cl.LineError) as caught:
        cl.parse_line(text)
    return caught.value


@pytest.mark.parametrize("type_", sorted(VALID))
def test_every_type_parses_into_its_change(type_: str) -> None:
    change = cl.parse_line(json.dumps(line(type_)))
    assert type_ == change.TYPE
    assert (change.id, change.effective) == ("EV-1", "2026-11-03")
    for member, value in VALID[type_].items():
        assert getattr(change, member) == value


def test_the_line_types_are_the_wire_event_types_but_the_registry_and_gateway_own() -> None:
    derived = {cl.COMPOSITION_CHANGED, "eligibility.changed", "action.proposed", "action.withdrawn"}
    assert {*cl.TYPES, *derived} == set(event_types.NAMES)


def test_an_integer_score_is_a_number() -> None:
    change = cl.parse_line(json.dumps(line("household.rescored", score=9)))
    assert isinstance(change, cl.HouseholdRescored)
    assert change.score == 9.0


# (the line's text, the member named, words of the message, a value it must not show)
FAULTS: dict[str, tuple[str, str, str, str]] = {
    "not JSON": ('{"id": "EV-1", ', "line", "not valid JSON", ""),
    "not an object": (json.dumps([IDCS]), "line", "not a JSON object", IDCS),
    "no type": (json.dumps({"id": "EV-1", "idcs": IDCS}), "type", "missing", IDCS),
    "unknown type": (json.dumps(line("person.died", type="person.moved")), "type", "not a", ""),
    "composition is the registry's": (
        json.dumps(line("household.rescored", type="household.composition_changed")),
        "type",
        "registry itself",
        "",
    ),
    "unknown member": (json.dumps(line("person.died", nickname="Sam")), "nickname", "not a", "Sam"),
    "unknown member named like data": (
        json.dumps(line("person.died", **{OTHER_IDCS: 1})),
        "line",
        "not a member",
        OTHER_IDCS,
    ),
    "missing member": (json.dumps(line("person.died", idcs=None)), "idcs", "missing", ""),
    "missing common member": (json.dumps(line("person.died", effective=None)), "effective", "", ""),
    "wrong type": (json.dumps(line("person.died", idcs=int(IDCS))), "idcs", "not a string", IDCS),
    "bad id": (json.dumps(line("person.died", id="EV 1/2")), "id", "characters", "EV 1/2"),
    "unknown source": (json.dumps(line("person.died", source="ANR")), "source", "not one", "ANR"),
    "source not the type's": (
        json.dumps(line("person.died", source="CNSS")),
        "source",
        "comes from RNP",
        "",
    ),
    "date not YYYY-MM-DD": (
        json.dumps(line("person.died", effective="03/11/2026")),
        "effective",
        "YYYY-MM-DD",
        "03/11/2026",
    ),
    "date not in the calendar": (
        json.dumps(line("person.died", effective="2026-02-30")),
        "effective",
        "calendar",
        "2026-02-30",
    ),
    "IDCS check digit": (
        json.dumps(line("person.died", idcs=BAD_CHECK)),
        "idcs",
        "check digit",
        BAD_CHECK,
    ),
    "IDCS not 10 digits": (
        json.dumps(line("person.died", idcs="12345")),
        "idcs",
        "10 digits",
        "12345",
    ),
    "bad household id": (
        json.dumps(line("member.left", household_id="X042117093")),
        "household_id",
        "'H' and 9 digits",
        "X042117093",
    ),
    "unknown relationship": (
        json.dumps(line("member.joined", relationship="COUSIN")),
        "relationship",
        "not a known",
        "COUSIN",
    ),
    "joining as declarant": (
        json.dumps(line("member.joined", relationship="DECLARANT")),
        "relationship",
        "not a known",
        "",
    ),
    "unknown region": (
        json.dumps(line("household.region_changed", region="ATLANTIS")),
        "region",
        "not a known",
        "ATLANTIS",
    ),
    "unknown area": (
        json.dumps(line("household.region_changed", area="SUBURBAN")),
        "area",
        "not a known",
        "SUBURBAN",
    ),
    "unknown sex": (json.dumps(line("person.born", sex="X")), "sex", "not a known", ""),
    "score above 20": (
        json.dumps(line("household.rescored", score=20.5)),
        "score",
        "outside 0 to 20",
        "20.5",
    ),
    "score below 0": (
        json.dumps(line("household.rescored", score=-0.25)),
        "score",
        "outside",
        "-0.25",
    ),
    "score NaN": (
        json.dumps(line("household.rescored", score=float("nan"))),
        "score",
        "finite",
        "",
    ),
    "score Infinity": (
        json.dumps(line("household.rescored", score=float("inf"))),
        "score",
        "finite",
        "",
    ),
    "score a string": (
        json.dumps(line("household.rescored", score="9.81")),
        "score",
        "not a number",
        "9.81",
    ),
    "score a boolean": (
        json.dumps(line("household.rescored", score=True)),
        "score",
        "not a number",
        "",
    ),
    "empty name": (json.dumps(line("person.born", given_name=" ")), "given_name", "empty", ""),
    "name too long": (
        json.dumps(line("person.born", family_name="B" * 101)),
        "family_name",
        "longer than 100",
        "B" * 101,
    ),
    "control character in a name": (
        json.dumps(line("person.born", given_name="Sal\nma")),
        "given_name",
        "control character",
        "Sal",
    ),
    "scheme not a code": (
        json.dumps(line("coverage.started", scheme="amo tns")),
        "scheme",
        "upper-case code",
        "amo tns",
    ),
    "bad corrects": (
        json.dumps(line("correction", corrects="")),
        "corrects",
        "characters",
        "",
    ),
    "member given twice": (
        json.dumps(line("person.died"))[:-1] + f', "idcs": "{OTHER_IDCS}"}}',
        "idcs",
        "given twice",
        OTHER_IDCS,
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_names_its_member(fault: str) -> None:
    text, member, words, _ = FAULTS[fault]
    found = error(text)
    assert found.member == member
    assert words in found.message


@pytest.mark.parametrize("fault", sorted(f for f, (*_, value) in FAULTS.items() if value))
def test_no_message_quotes_the_value(fault: str) -> None:
    text, _, _, value = FAULTS[fault]
    found = error(text)
    assert value not in str(found)
    assert value not in found.message
