"""Eligibility changes derived from registry changes (gateway/events/consequences.py): a
household judged on the facts the registry journalled right after the change and on the
same facts with the changed one put back, by the pipeline's own rules and the shipped
programmes (AMOT threshold 9.3264284, ASD 9.743001)."""

from __future__ import annotations

from typing import Any

from adapters.registry_db import JournalRow
from gateway.events.consequences import household_of, turns
from gateway.pipeline import programmes
from gateway.pipeline.eligibility import NO_LIVING, NO_OTHER_AMO, SCORE_ABOVE, SCORE_BELOW

CATALOGUE = programmes.load_default()
HOUSEHOLD = "H000000001"
PERSON = "1000000017"


def _row(
    kind: str,
    before: Any,
    after: Any,
    *,
    score: float,
    schemes: tuple[str, ...] = (),
    own: str | None = None,
    corrects: str | None = None,
    living: int | None = None,
    alive: bool = True,
) -> JournalRow:
    correction = corrects is not None
    return JournalRow(
        source="RSU",
        seq=1,
        event_id="E-1",
        type="correction" if correction else kind,
        effective="2026-11-04",
        recorded="2026-11-05T08:30:00.000000Z",
        idcs=None if kind.startswith("household.") else PERSON,
        household_id=HOUSEHOLD if kind.startswith(("household.", "member.")) else None,
        before=before,
        after=after,
        corrects=corrects,
        corrected_type=kind if correction else None,
        facts={
            "household_id": HOUSEHOLD,
            "score": score,
            "schemes": list(schemes),
            "person_scheme": own,
            **({} if living is None else {"living": living, "person_alive": alive}),
        },
    )


def _turned(row: JournalRow) -> dict[str, tuple[bool, bool]]:
    return {t.programme.code: (t.before.eligible, t.after.eligible) for t in turns(row, CATALOGUE)}


def test_a_rescoring_above_both_thresholds_turns_both_programmes() -> None:
    row = _row("household.rescored", {"score": 9.0}, {"score": 9.9}, score=9.9)
    assert _turned(row) == {"AMOT": (True, False), "ASD": (True, False)}


def test_a_rescoring_between_the_thresholds_turns_only_amo_tadamon() -> None:
    row = _row("household.rescored", {"score": 9.0}, {"score": 9.5}, score=9.5)
    assert _turned(row) == {"AMOT": (True, False)}


def test_a_rescoring_that_stays_on_one_side_turns_nothing() -> None:
    assert _turned(_row("household.rescored", {"score": 9.0}, {"score": 9.1}, score=9.1)) == {}


def test_other_coverage_starting_for_a_member_turns_amo_tadamon_only() -> None:
    row = _row(
        "coverage.started",
        {"scheme": None},
        {"scheme": "AMO_SALARIES"},
        score=9.0,
        schemes=("AMO_SALARIES",),
        own="AMO_SALARIES",
    )
    assert _turned(row) == {"AMOT": (True, False)}


def test_coverage_ending_while_another_member_is_still_covered_turns_nothing() -> None:
    row = _row(
        "coverage.ended",
        {"scheme": "AMO_TNS"},
        {"scheme": None},
        score=9.0,
        schemes=("AMO_SALARIES",),
    )
    assert _turned(row) == {}


def test_amo_tadamon_coverage_itself_is_not_other_coverage() -> None:
    row = _row(
        "coverage.started",
        {"scheme": None},
        {"scheme": "AMO_TADAMON"},
        score=9.0,
        schemes=("AMO_TADAMON",),
        own="AMO_TADAMON",
    )
    assert _turned(row) == {}


def test_a_covered_member_leaving_makes_the_household_eligible_again() -> None:
    row = _row(
        "member.left",
        {"household_id": HOUSEHOLD, "relationship": "CHILD", "position": 3},
        {"household_id": None, "relationship": None, "position": None},
        score=9.0,
        own="AMO_TNS",
    )
    assert _turned(row) == {"AMOT": (False, True)}


def test_a_covered_person_joining_makes_the_household_ineligible_for_amo_tadamon() -> None:
    row = _row(
        "member.joined",
        {"household_id": None, "relationship": None, "position": None},
        {"household_id": HOUSEHOLD, "relationship": "SPOUSE", "position": 2},
        score=9.0,
        schemes=("AMO_SALARIES",),
        own="AMO_SALARIES",
    )
    assert _turned(row) == {"AMOT": (True, False)}


def test_a_correction_of_a_rescoring_turns_the_decision_back() -> None:
    row = _row("household.rescored", {"score": 9.9}, {"score": 9.0}, score=9.0, corrects="E-0")
    assert _turned(row) == {"AMOT": (False, True), "ASD": (False, True)}


def test_the_reasons_of_both_decisions_are_kept() -> None:
    row = _row("household.rescored", {"score": 9.0}, {"score": 9.9}, score=9.9)
    amot = next(t for t in turns(row, CATALOGUE) if t.programme.code == "AMOT")
    assert amot.before.reasons == (SCORE_BELOW, NO_OTHER_AMO)
    assert amot.after.reasons == (SCORE_ABOVE, NO_OTHER_AMO)


def test_a_change_without_household_facts_turns_nothing() -> None:
    row = _row("household.rescored", {"score": 9.0}, {"score": 9.9}, score=9.9)
    plain = JournalRow(
        row.source, row.seq, row.event_id, row.type, row.effective, row.recorded,
        row.idcs, row.household_id, row.before, row.after, row.corrects, row.corrected_type,
    )  # fmt: skip
    assert turns(plain, CATALOGUE) == []
    assert household_of(plain) == ""


def test_the_death_of_the_last_living_member_ends_every_benefit() -> None:
    row = _row("person.died", {"vital_status": "ALIVE"}, {"vital_status": "DECEASED"},
               score=9.0, living=0)  # fmt: skip
    assert _turned(row) == {"AMOT": (True, False), "ASD": (True, False)}
    asd = next(t for t in turns(row, CATALOGUE) if t.programme.code == "ASD")
    assert NO_LIVING in asd.after.reasons


def test_a_death_that_leaves_a_living_member_turns_nothing() -> None:
    row = _row("person.died", {"vital_status": "ALIVE"}, {"vital_status": "DECEASED"},
               score=9.0, living=1)  # fmt: skip
    assert _turned(row) == {}


def test_the_last_member_leaving_ends_every_benefit() -> None:
    row = _row(
        "member.left",
        {"household_id": HOUSEHOLD, "relationship": "DECLARANT", "position": 1},
        {"household_id": None, "relationship": None, "position": None},
        score=9.0,
        living=0,
    )
    assert _turned(row) == {"AMOT": (True, False), "ASD": (True, False)}


def test_the_correction_of_the_last_death_brings_the_benefits_back() -> None:
    row = _row("person.died", {"vital_status": "DECEASED"}, {"vital_status": "ALIVE"},
               score=9.0, living=1, corrects="E-0")  # fmt: skip
    assert _turned(row) == {"AMOT": (False, True), "ASD": (False, True)}


def test_a_deceased_member_leaving_an_emptied_household_turns_nothing() -> None:
    """Its benefits ended with the last death; the departure of the dead changes no count."""
    row = _row(
        "member.left",
        {"household_id": HOUSEHOLD, "relationship": "CHILD", "position": 2},
        {"household_id": None, "relationship": None, "position": None},
        score=9.0,
        living=0,
        alive=False,
    )
    assert _turned(row) == {}


def test_a_living_person_joining_an_emptied_household_brings_its_benefits_back() -> None:
    row = _row(
        "member.joined",
        {"household_id": None, "relationship": None, "position": None},
        {"household_id": HOUSEHOLD, "relationship": "SPOUSE", "position": 2},
        score=9.0,
        living=1,
    )
    assert _turned(row) == {"AMOT": (False, True), "ASD": (False, True)}
