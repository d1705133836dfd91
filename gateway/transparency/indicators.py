"""The transparency indicators of one month, counted from what the gateway keeps: the
audit trail (exchanges, by decision and reason), contest cases (each step, and the time
to answer) and due process (proposed actions and how each ended). Pure: the stores'
readers hand the month's values in (gateway/transparency/sources.py), and what may be
published of each count is gateway/transparency/disclosure.py's business.

Every table counts events that happened in the month [start_us, end_us), by when they
happened: an exchange by its record's time, a contest step by the step's, an action's
proposal by its proposal and its end by its resolution. Dimensions are codes partners and
the observatory already know (institution ids, purpose codes, method names, reasons),
never a subject.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consent.model import ConsentRecord, Status
from gateway.audit.record import AuditRecord
from gateway.contests.cases import ANSWER, CaseEvent
from gateway.pb.jisr.v1 import records_pb2 as rec
from gateway.pipeline import eligibility
from gateway.pipeline.due_process import ProposedAction
from gateway.pipeline.programmes import Catalogue

DAY_US = 86_400 * 1_000_000
# Every table a publication holds, counts then durations (their titles are the console's
# words `transparency.table.<name>`).
TABLES = (
    "exchanges",
    "lookups_by_region",
    "consents",
    "contest_steps",
    "due_process",
    "steps_by_region",
    "eligibility_by_band",
    "eligibility_by_region",
    "contest_answer_days",
    "death_to_end_days",
)
# Tables of the registry as it stands when published, not of what happened in the month.
SNAPSHOTS = frozenset({"eligibility_by_band", "eligibility_by_region"})
DUE_PROCESS_METHOD = "jisr.v1.DueProcess/ProposeAction"


@dataclass(frozen=True, slots=True)
class Month:
    """[start_us, end_us): a calendar month in UTC, e.g. "2026-11"."""

    label: str
    start_us: int
    end_us: int

    def holds(self, at_us: int) -> bool:
        return self.start_us <= at_us < self.end_us


@dataclass(frozen=True, slots=True)
class Counts:
    """One table of counts: its dimensions and a count per combination seen.

    `margins`: the groupings (by these dimensions) whose sums another published table
    gives or implies, so that disclosure control keeps every such group safe on its own
    (gateway/transparency/disclosure.py). `units`: per cell, how many distinct persons or
    households it counts, where that can be fewer than the count (one household looked up
    ten times): the threshold applies to them."""

    name: str
    description: str
    dimensions: tuple[str, ...]
    rows: dict[tuple[str, ...], int]
    margins: tuple[tuple[str, ...], ...] = ()
    units: dict[tuple[str, ...], int] | None = None


@dataclass(frozen=True, slots=True)
class Durations:
    """One table of durations in days: per group, every value seen (the median and the
    number are what may be published)."""

    name: str
    description: str
    dimensions: tuple[str, ...]
    values: dict[tuple[str, ...], list[float]]

    def medians(self) -> dict[tuple[str, ...], tuple[int, float]]:
        return {k: (len(v), statistics.median(v)) for k, v in self.values.items() if v}


def method_name(method: str) -> str:
    """ "VerifyEligibility" of "/jisr.v1.RegistryExchange/VerifyEligibility"."""
    return method.rsplit("/", 1)[-1]


def exchanges(records: Iterable[AuditRecord], month: Month) -> Counts:
    """Calls answered or refused: one per unary call or stream (a batch stream's parts are
    counted as the one call they belong to); the gateway's own records of proposed actions
    are due process's, not exchanges."""
    rows: Counter[tuple[str, ...]] = Counter()
    for r in records:
        if r.part != 0 or not month.holds(r.at_us) or r.method.endswith(DUE_PROCESS_METHOD):
            continue
        rows[(r.requester, r.purpose, method_name(r.method), r.decision, r.reason)] += 1
    return Counts(
        "exchanges",
        "Exchanges through the gateway: calls permitted and refused, by the institution "
        "that asked, its purpose, the method, the decision and the refusal's reason.",
        ("institution", "purpose", "method", "decision", "reason"),
        dict(rows),
        margins=(("purpose", "decision"),),
    )


def consents(
    revisions: Iterable[ConsentRecord], expiring: Iterable[ConsentRecord], month: Month
) -> Counts:
    """Citizens' consents, by the institution they allow (the grantee) and purpose: granted
    and revoked in the month (revisions recorded then, times in seconds) and expired in the
    month (still active, validity ending then). Calls refused because a consent's use cap
    was reached are the `exchanges` rows with reason CONSENT_USE_EXCEEDED: counted there
    only, since two tables counting them would let one be subtracted from the other."""
    rows: Counter[tuple[str, ...]] = Counter()
    start_s, end_s = month.start_us // 1_000_000, month.end_us // 1_000_000
    for r in revisions:
        if not start_s <= r.recorded_at < end_s:
            continue
        step = "granted" if r.revision == 1 else "revoked" if r.status == Status.REVOKED else ""
        for purpose in r.purposes if step else ():
            rows[(r.grantee, purpose, step)] += 1
    for r in expiring:
        if start_s <= r.valid_until < end_s:
            for purpose in r.purposes:
                rows[(r.grantee, purpose, "expired")] += 1
    return Counts(
        "consents",
        "Citizens' consents by the institution they allow and the purpose: granted, revoked "
        "and expired in the month (one consent naming several purposes counts once per "
        "purpose; use caps reached are the exchanges refused with CONSENT_USE_EXCEEDED).",
        ("institution", "purpose", "step"),
        dict(rows),
        margins=(("step",),),
    )


def contest_steps(steps: Iterable[tuple[str, CaseEvent]], month: Month) -> Counts:
    """Each step of a contest case taken in the month, by the institution whose DPO
    answers it: opened, answered, escalated (by the citizen, or by the system when
    overdue), and how it was closed."""
    rows: Counter[tuple[str, ...]] = Counter()
    for institution, step in steps:
        if month.holds(step.at_us):
            rows[(institution, step.action)] += 1
    return Counts(
        "contest_steps",
        "Contest cases: steps taken in the month by institution (open, answer, escalate, "
        "escalate_overdue, accept, withdraw, uphold, dismiss).",
        ("institution", "step"),
        dict(rows),
        margins=(("step",),),
    )


def answer_days(steps: Iterable[tuple[str, CaseEvent, int]], month: Month) -> Durations:
    """Days from a case's opening to its answer, for answers given in the month, by
    institution. `steps`: (institution, step, the case's opening time)."""
    values: dict[tuple[str, ...], list[float]] = {}
    for institution, step, opened_us in steps:
        if step.action == ANSWER and month.holds(step.at_us):
            values.setdefault((institution,), []).append((step.at_us - opened_us) / DAY_US)
    return Durations(
        "contest_answer_days",
        "Days from a contest's opening to the institution's answer, for answers given in "
        "the month: how many, and the median.",
        ("institution",),
        values,
    )


def due_process(actions: Iterable[ProposedAction], month: Month) -> Counts:
    """Proposed actions by programme: proposed in the month, and how those that ended in
    the month ended (carried out, withdrawn and why, kept on contest)."""
    rows: Counter[tuple[str, ...]] = Counter()
    for a in actions:
        if month.holds(a.proposed_us):
            rows[(a.programme, "proposed")] += 1
        if a.resolved_us and month.holds(a.resolved_us) and a.state != "contested":
            rows[(a.programme, _ending(a))] += 1
    return Counts(
        "due_process",
        "Proposed actions to end a benefit, by programme: proposed in the month, and each "
        "ending in the month (confirmed: carried out; withdrawn: the facts turned back or "
        "were corrected; kept: the regulator upheld the household's contest).",
        ("programme", "step"),
        dict(rows),
        margins=(("step",),),
    )


def _ending(action: ProposedAction) -> str:
    """How an action ended, as the tables name it: "confirmed:notice_over"..."""
    return action.state if not action.resolution else f"{action.state}:{action.resolution}"


def death_to_end_days(ended: Iterable[tuple[ProposedAction, int]], month: Month) -> Durations:
    """Days from a death's registration to the end of the benefit it caused, for benefits
    ended in the month, by programme. `ended`: (a carried-out action whose cause was a
    death, the time the source registry recorded the death)."""
    values: dict[tuple[str, ...], list[float]] = {}
    for action, registered_us in ended:
        if action.state == "confirmed" and month.holds(action.resolved_us):
            days = (action.resolved_us - registered_us) / DAY_US
            values.setdefault((action.programme,), []).append(days)
    return Durations(
        "death_to_end_days",
        "Days from a death's registration in civil status to the end of the benefit it "
        "caused (after the notice and any contest), for benefits ended in the month.",
        ("programme",),
        values,
    )


@dataclass(frozen=True, slots=True)
class Household:
    """What the eligibility snapshot needs of a household: no identifier is kept."""

    region: int
    area: int
    score: float
    schemes: tuple[str, ...]


def region_name(region: int, area: int) -> tuple[str, str]:
    """("CASABLANCA_SETTAT", "URBAN") of the registry's numbers."""
    return (
        rec.Region.Name(rec.Region.ValueType(region)).removeprefix("REGION_"),
        rec.Area.Name(rec.Area.ValueType(area)).removeprefix("AREA_"),
    )


def lookups_by_region(
    records: Iterable[AuditRecord], where: Mapping[str, tuple[str, str]], month: Month
) -> Counts:
    """Subjects looked up in the month, by the region and area of their household, the
    purpose and the decision. `where`: a subject's keyed hash (as records hold it) -> its
    household's (region, area), computed inside the gateway with its audit key; subjects
    it does not know (malformed ids, people in no household) are not counted. Each cell
    also counts its distinct subjects: one household looked up ten times is one."""
    rows: Counter[tuple[str, ...]] = Counter()
    seen: dict[tuple[str, ...], set[str]] = {}
    for r in records:
        if not month.holds(r.at_us) or r.method.endswith(DUE_PROCESS_METHOD):
            continue
        for subject in r.subjects:
            place = where.get(subject)
            if place is not None:
                key = (*place, r.purpose, r.decision)
                rows[key] += 1
                seen.setdefault(key, set()).add(subject)
    return Counts(
        "lookups_by_region",
        "Persons and households looked up in the month (each subject of each exchange), by "
        "the region and area (urban or rural) of the household, the purpose and the decision.",
        ("region", "area", "purpose", "decision"),
        dict(rows),
        margins=(("purpose", "decision"),),
        units={k: len(v) for k, v in seen.items()},
    )


def eligibility_snapshot(
    households: Iterable[Household], catalogue: Catalogue, as_of: dt.date
) -> tuple[Counts, Counts]:
    """Every RSU household judged for each programme on `as_of` with the programme's own
    rules: counted by programme, score band and decision, and by programme, region, area
    and decision. A snapshot of the registry as it stands (it keeps no history)."""
    by_band: Counter[tuple[str, ...]] = Counter()
    by_region: Counter[tuple[str, ...]] = Counter()
    for h in households:
        facts = eligibility.HouseholdFacts(h.score, h.schemes)
        band = catalogue.bands.band(h.score)
        region, area = region_name(h.region, h.area)
        for programme in catalogue.programmes.values():
            decision = eligibility.decide(programme, facts, as_of)
            outcome = "eligible" if decision.eligible else "not_eligible"
            by_band[(programme.code, band, outcome)] += 1
            by_region[(programme.code, region, area, outcome)] += 1
    described = (
        "RSU households by programme and decision on the month's last day, judged with the "
        "programme's rules on the registry as it stands when published (it keeps no history)"
    )
    return (
        Counts(
            "eligibility_by_band",
            f"{described}, by score band.",
            ("programme", "score_band", "decision"),
            dict(by_band),
            # Every programme judges the same households: a band's households are one sum
            # for all, and each programme's decisions sum alike in both tables.
            margins=(("programme", "score_band"), ("programme", "decision")),
        ),
        Counts(
            "eligibility_by_region",
            f"{described}, by region and area.",
            ("programme", "region", "area", "decision"),
            dict(by_region),
            margins=(("programme", "region", "area"), ("programme", "decision")),
        ),
    )


# Where a subject's household is: a keyed subject hash (as the trail and the contest cases
# hold it) -> (region, area).
Places = Mapping[str, tuple[str, str]]


def steps_by_region(
    consents: Iterable[tuple[str, ConsentRecord]],
    contests: Iterable[tuple[str, CaseEvent]],
    actions: Iterable[tuple[str, ProposedAction]],
    where: Places,
    month: Month,
) -> Counts:
    """Consents granted and revoked, contest cases opened, and proposed actions proposed and
    carried out in the month, by the region and area of the household concerned. Each item
    comes with its subject's keyed hash; those `where` cannot place are not counted."""
    rows: Counter[tuple[str, ...]] = Counter()
    start_s, end_s = month.start_us // 1_000_000, month.end_us // 1_000_000

    def count(subject: str, kind: str, step: str) -> None:
        place = where.get(subject)
        if place is not None:
            rows[(*place, kind, step)] += 1

    for subject, r in consents:
        if start_s <= r.recorded_at < end_s:
            step = "granted" if r.revision == 1 else "revoked" if r.status == Status.REVOKED else ""
            if step:
                count(subject, "consent", step)
    for subject, step_taken in contests:
        if step_taken.action == "open" and month.holds(step_taken.at_us):
            count(subject, "contest", "open")
    for subject, a in actions:
        if month.holds(a.proposed_us):
            count(subject, "due_process", "proposed")
        if a.resolved_us and month.holds(a.resolved_us) and a.state != "contested":
            count(subject, "due_process", _ending(a))
    return Counts(
        "steps_by_region",
        "Consents granted and revoked, contests opened, and actions to end a benefit proposed "
        "and ended in the month (steps named as in the consents, contest_steps and "
        "due_process tables), by the region and area (urban or rural) of the household "
        "concerned.",
        ("region", "area", "kind", "step"),
        dict(rows),
        margins=(("kind", "step"),),
    )
