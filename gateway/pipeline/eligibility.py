"""Eligibility rules: a pure function from registry facts to a decision with reasons.

No I/O here: the exchange gathers the facts, this module only judges them, so every rule
can be tested exhaustively and explained to a citizen (reason codes, threshold version and
its legal reference). "Below the threshold" is strict: a score equal to the threshold is
not eligible (docs/eligibility.md).

Every decision cites the threshold version in force on its date, the refusals a subject's
own state settles (deceased, not in the RSU) included: the citizen and the auditor read
which rules were in force whatever the outcome. A score that is not a finite number is
never judged: -inf is "below" every threshold and NaN below none.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.pb.jisr.v1.registry_pb2 import ReasonCode
from gateway.pipeline.programmes import Programme, Threshold

SCORE_BELOW = ReasonCode.REASON_CODE_SCORE_BELOW_THRESHOLD
SCORE_ABOVE = ReasonCode.REASON_CODE_SCORE_ABOVE_THRESHOLD
OTHER_AMO = ReasonCode.REASON_CODE_OTHER_AMO_COVERAGE
NO_OTHER_AMO = ReasonCode.REASON_CODE_NO_OTHER_AMO_COVERAGE
DECEASED = ReasonCode.REASON_CODE_SUBJECT_DECEASED
NOT_IN_RSU = ReasonCode.REASON_CODE_NOT_REGISTERED_IN_RSU
NOT_IN_FORCE = ReasonCode.REASON_CODE_PROGRAMME_NOT_IN_FORCE
NO_LIVING = ReasonCode.REASON_CODE_NO_LIVING_MEMBER

# Reasons that mean "not eligible"; the others record a condition that was met.
FAILING = frozenset({SCORE_ABOVE, OTHER_AMO, DECEASED, NOT_IN_RSU, NOT_IN_FORCE, NO_LIVING})


@dataclass(frozen=True, slots=True)
class HouseholdFacts:
    """What the rules need about a household: its score and its members' AMO schemes;
    and, where a registry change says it, how many members are alive and in it (None:
    not known, as on a query; registry events know it after a death or a departure)."""

    score: float
    coverage_schemes: tuple[str, ...] = ()
    living: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome and every reason behind it, in a stable order."""

    eligible: bool
    reasons: tuple[ReasonCode.ValueType, ...]
    threshold: Threshold | None


class UndecidableScoreError(ValueError):
    """The household's score is not a finite number: no decision can be made from it.

    Records are checked at the boundary (adapters/record_checks.py); reaching this is a
    gateway fault, so it is raised rather than turned into a refusal."""


def refuse(programme: Programme, reason: ReasonCode.ValueType, as_of: dt.date) -> Decision:
    """A refusal the subject's own state settles before any household rule applies.

    It cites the threshold version in force on `as_of` like any decision; with none in
    force, PROGRAMME_NOT_IN_FORCE follows the subject's reason, so a decision without a
    threshold version always says why."""
    threshold = programme.threshold_on(as_of)
    reasons = (reason,) if threshold is not None else (reason, NOT_IN_FORCE)
    return Decision(eligible=False, reasons=reasons, threshold=threshold)


def decide(programme: Programme, household: HouseholdFacts, as_of: dt.date) -> Decision:
    """Judge one household against `programme` as in force on `as_of`."""
    if not math.isfinite(household.score):
        # Never the value in the message: the score is personal data.
        raise UndecidableScoreError("household score is not a finite number")
    threshold = programme.threshold_on(as_of)
    if threshold is None:
        return Decision(eligible=False, reasons=(NOT_IN_FORCE,), threshold=None)
    reasons = [SCORE_BELOW if household.score < threshold.value else SCORE_ABOVE]
    if programme.needs_coverage:
        other = has_other_coverage(household.coverage_schemes, programme.ignored_coverage_schemes)
        reasons.append(OTHER_AMO if other else NO_OTHER_AMO)
    if household.living == 0:
        reasons.append(NO_LIVING)
    eligible = not any(r in FAILING for r in reasons)
    return Decision(eligible=eligible, reasons=tuple(reasons), threshold=threshold)


def has_other_coverage(schemes: Iterable[str], ignored: frozenset[str]) -> bool:
    """True when any member holds a scheme the programme does not ignore."""
    return any(scheme not in ignored for scheme in schemes)
