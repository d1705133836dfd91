"""Eligibility rules: a pure function from registry facts to a decision with reasons.

No I/O here: the exchange gathers the facts, this module only judges them, so every rule
can be tested exhaustively and explained to a citizen (reason codes, threshold version and
its legal reference). "Below the threshold" is strict: a score equal to the threshold is
not eligible (docs/eligibility.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.pb.jisr.v1.registry_pb2 import ReasonCode
from gateway.programmes import Programme, Threshold

SCORE_BELOW = ReasonCode.REASON_CODE_SCORE_BELOW_THRESHOLD
SCORE_ABOVE = ReasonCode.REASON_CODE_SCORE_ABOVE_THRESHOLD
OTHER_AMO = ReasonCode.REASON_CODE_OTHER_AMO_COVERAGE
NO_OTHER_AMO = ReasonCode.REASON_CODE_NO_OTHER_AMO_COVERAGE
DECEASED = ReasonCode.REASON_CODE_SUBJECT_DECEASED
NOT_IN_RSU = ReasonCode.REASON_CODE_NOT_REGISTERED_IN_RSU
NOT_IN_FORCE = ReasonCode.REASON_CODE_PROGRAMME_NOT_IN_FORCE

# Reasons that mean "not eligible"; the others record a condition that was met.
FAILING = frozenset({SCORE_ABOVE, OTHER_AMO, DECEASED, NOT_IN_RSU, NOT_IN_FORCE})


@dataclass(frozen=True, slots=True)
class HouseholdFacts:
    """What the rules need about a household: its score and its members' AMO schemes."""

    score: float
    coverage_schemes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome and every reason behind it, in a stable order."""

    eligible: bool
    reasons: tuple[ReasonCode.ValueType, ...]
    threshold: Threshold | None


def refuse(reason: ReasonCode.ValueType) -> Decision:
    """A decision the subject's own state settles before any household rule applies."""
    return Decision(eligible=False, reasons=(reason,), threshold=None)


def decide(programme: Programme, household: HouseholdFacts, as_of: dt.date) -> Decision:
    """Judge one household against `programme` as in force on `as_of`."""
    threshold = programme.threshold_on(as_of)
    if threshold is None:
        return refuse(NOT_IN_FORCE)
    reasons = [SCORE_BELOW if household.score < threshold.value else SCORE_ABOVE]
    if programme.needs_coverage:
        other = has_other_coverage(household.coverage_schemes, programme.ignored_coverage_schemes)
        reasons.append(OTHER_AMO if other else NO_OTHER_AMO)
    eligible = not any(r in FAILING for r in reasons)
    return Decision(eligible=eligible, reasons=tuple(reasons), threshold=threshold)


def has_other_coverage(schemes: Iterable[str], ignored: frozenset[str]) -> bool:
    """True when any member holds a scheme the programme does not ignore."""
    return any(scheme not in ignored for scheme in schemes)
