"""Eligibility rules over plain facts (no registry, no network)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from gateway.pb.jisr.v1.registry_pb2 import ReasonCode
from gateway.pipeline.eligibility import (
    DECEASED,
    NO_OTHER_AMO,
    NOT_IN_FORCE,
    NOT_IN_RSU,
    OTHER_AMO,
    SCORE_ABOVE,
    SCORE_BELOW,
    HouseholdFacts,
    UndecidableScoreError,
    decide,
    refuse,
)
from gateway.pipeline.programmes import load_default, parse

CATALOGUE = load_default()
AMOT = CATALOGUE.programmes["AMOT"]
ASD = CATALOGUE.programmes["ASD"]
DAY = dt.date(2025, 1, 1)


def test_score_below_threshold_without_other_coverage_is_eligible_for_amot() -> None:
    decision = decide(AMOT, HouseholdFacts(9.0), DAY)
    assert decision.eligible
    assert decision.reasons == (SCORE_BELOW, NO_OTHER_AMO)


def test_score_equal_to_threshold_is_not_eligible() -> None:
    decision = decide(AMOT, HouseholdFacts(9.3264284), DAY)
    assert not decision.eligible
    assert decision.reasons[0] == SCORE_ABOVE


def test_other_amo_coverage_excludes_from_amot() -> None:
    decision = decide(AMOT, HouseholdFacts(9.0, ("AMO_SALARIES",)), DAY)
    assert not decision.eligible
    assert decision.reasons == (SCORE_BELOW, OTHER_AMO)


def test_amo_tadamon_coverage_is_not_other_coverage() -> None:
    assert decide(AMOT, HouseholdFacts(9.0, ("AMO_TADAMON",)), DAY).eligible


def test_asd_ignores_amo_coverage() -> None:
    decision = decide(ASD, HouseholdFacts(9.5, ("AMO_SALARIES",)), DAY)
    assert decision.eligible
    assert decision.reasons == (SCORE_BELOW,)


def test_no_threshold_in_force_is_not_eligible() -> None:
    decision = decide(ASD, HouseholdFacts(8.0), dt.date(2023, 11, 30))
    assert not decision.eligible
    assert decision.reasons == (NOT_IN_FORCE,)
    assert decision.threshold is None


def test_the_threshold_version_in_force_on_the_date_applies() -> None:
    catalogue = parse(
        """
[[score_band]]
code = "LOW"
below = 9.5
[[score_band]]
code = "HIGH"

[[programme]]
code = "NEWP"
name = "A programme added as data"
operator = "ANSS"
[[programme.threshold]]
version = "V1"
value = 9.0
effective_from = 2024-01-01
effective_until = 2024-12-31
legal_reference = "Décret 1"
[[programme.threshold]]
version = "V2"
value = 10.0
effective_from = 2025-01-01
legal_reference = "Décret 2"
""",
        "inline",
    )
    programme = catalogue.programmes["NEWP"]
    facts = HouseholdFacts(9.5)
    old = decide(programme, facts, dt.date(2024, 6, 1))
    new = decide(programme, facts, dt.date(2025, 6, 1))
    assert (old.eligible, old.threshold and old.threshold.version) == (False, "V1")
    assert (new.eligible, new.threshold and new.threshold.version) == (True, "V2")
    assert decide(programme, facts, dt.date(2024, 12, 31)).threshold is not None


@pytest.mark.parametrize("score", [-math.inf, math.inf, math.nan])
def test_a_score_that_is_not_a_finite_number_is_never_decided(score: float) -> None:
    """-inf would be "below" every threshold (eligible), NaN below none."""
    with pytest.raises(UndecidableScoreError) as err:
        decide(AMOT, HouseholdFacts(score), DAY)
    assert str(score) not in str(err.value)


@pytest.mark.parametrize("reason", [DECEASED, NOT_IN_RSU])
def test_a_refusal_for_the_subjects_own_state_cites_the_threshold_in_force(
    reason: ReasonCode.ValueType,
) -> None:
    decision = refuse(ASD, reason, DAY)
    assert not decision.eligible
    assert decision.reasons == (reason,)
    assert decision.threshold == ASD.threshold_on(DAY)
    assert decision.threshold is not None


def test_a_refusal_when_no_threshold_is_in_force_also_says_the_programme_is_not_in_force() -> None:
    decision = refuse(ASD, DECEASED, dt.date(2023, 11, 30))
    assert decision.reasons == (DECEASED, NOT_IN_FORCE)
    assert decision.threshold is None
