"""What a registry change does to eligibility: the `eligibility.changed` events the gateway
derives from a change (docs/events.md, "Eligibility changes").

A household's decision for a programme rests on its score, its members' AMO coverage
and, after a death or a departure, whether any member is alive in it
(gateway/pipeline/eligibility.py). A rescoring, a coverage started or ended, a member
joining, leaving or dying, or the correction of one of these, may turn it. The registry
journals, with each such change, the household's facts right after it
(adapters/registry_changes.py); the facts right before follow by putting back the one fact
the change replaced. The household is judged on both, on the change's
effective date: where the outcomes differ, an `eligibility.changed` event follows the change
in the log. Facts taken as each change was made, not as the registry stands when the
gateway reads it, so changes read together are judged in the order they were made.

The judging is the pipeline's own pure function; this module only gathers the two sets of
facts, so a decision here and a VerifyEligibility call on the same facts cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.registry_db import JournalRow
from gateway.pipeline import eligibility
from gateway.pipeline.eligibility import Decision, HouseholdFacts
from gateway.pipeline.programmes import Catalogue, Programme


@dataclass(frozen=True, slots=True)
class Turn:
    """One programme whose decision a change turned."""

    programme: Programme
    before: Decision
    after: Decision


def kind_of(row: JournalRow) -> str:
    """The type of change a row makes (a correction's: the type it undoes)."""
    return (row.corrected_type or "") if row.type == "correction" else row.type


def turns(row: JournalRow, catalogue: Catalogue) -> list[Turn]:
    """The programmes whose decision for the row's household the change turns."""
    facts = row.facts
    if not facts:
        return []
    after = _after(facts)
    before = _before(row, facts, after)
    day = dt.date.fromisoformat(row.effective)
    found: list[Turn] = []
    for programme in catalogue.programmes.values():
        old = eligibility.decide(programme, before, day)
        new = eligibility.decide(programme, after, day)
        if old.eligible != new.eligible:
            found.append(Turn(programme, old, new))
    return found


def household_of(row: JournalRow) -> str:
    """The household the row's facts are about ("" without facts)."""
    return str(row.facts.get("household_id") or "") if row.facts else ""


def _after(facts: Mapping[str, Any]) -> HouseholdFacts:
    living = facts.get("living")
    return HouseholdFacts(
        float(facts["score"]),
        tuple(facts.get("schemes") or ()),
        int(living) if living is not None else None,
    )


def _before(row: JournalRow, facts: Mapping[str, Any], after: HouseholdFacts) -> HouseholdFacts:
    """The facts with the one the change replaced put back."""
    before_side, after_side = row.before or {}, row.after or {}
    score = float(before_side["score"]) if "score" in before_side else after.score
    schemes = list(after.coverage_schemes)
    kind = kind_of(row)
    if kind.startswith("coverage."):
        _swap(schemes, gone=before_side.get("scheme"), came=after_side.get("scheme"))
    elif kind.startswith("member."):
        household, own = facts.get("household_id"), facts.get("person_scheme")
        was_in = before_side.get("household_id") == household
        is_in = after_side.get("household_id") == household
        if was_in != is_in:
            _swap(schemes, gone=own if was_in else None, came=own if is_in else None)
    return HouseholdFacts(score, tuple(schemes), _living_before(row, after.living))


def _living_before(row: JournalRow, living: int | None) -> int | None:
    """Living members before the change: a death took one (the person was alive); a
    departure took one and an arrival brought one, if the person is alive. A correction
    undoes the change, so the other way round."""
    if living is None or row.facts is None:
        return None
    alive = bool(row.facts.get("person_alive", True))
    counted = {"person.died": 1, "member.left": int(alive), "member.joined": -int(alive)}
    delta = counted.get(kind_of(row), 0)
    return living - delta if row.type == "correction" else living + delta


def _swap(schemes: list[str], *, gone: str | None, came: str | None) -> None:
    """Turn the after-list into the before-list: the scheme the change brought leaves,
    the one it took away comes back."""
    if came and came in schemes:
        schemes.remove(came)
    if gone:
        schemes.append(gone)
